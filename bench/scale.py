"""Running at scale: the pipeline on object storage (S3) and on Dask, beside local disk.

    python -m bench.scale --n 20000 --repeat 3 [--out bench/out] [--seed 7] [--only CONFIG]

One invocation, in order:

1. the corpus: bench/generate.py's N documents, OUT/corpus-N-seedS, made or reused exactly as
   ``bench.run`` does (``bench.run.ensure_corpus``);
2. a moto S3 server (``moto_server``, in memory, 127.0.0.1) with one bucket; the corpus is uploaded
   with 16 concurrent PUTs (timed, not a pipeline figure);
3. each configuration below, ``--repeat`` times in a fresh warehouse: a full load, then a no-op
   rerun, each through the CLI (``pipeline run --format json --quiet``) in its own process, with
   PIPELINE_* variables removed from the environment:

   ====================  =======================  ==============================================
   configuration         seeds -> warehouse       command
   ====================  =======================  ==============================================
   local-processes-2     local disk -> local      ``--orchestrator none --runner processes --workers 2``
   s3-processes-2        S3 -> S3                 ``--orchestrator none --runner processes --workers 2``
   s3-dask-1             S3 -> S3                 ``--orchestrator none --runner dask --workers 1``
   s3-dask-2             S3 -> S3                 ``--orchestrator none --runner dask --workers 2``
   s3-prefect-dask-2     S3 -> S3                 ``--runner dask --workers 2`` (Prefect, real server)
   ====================  =======================  ==============================================

   The Prefect configuration talks to a real ``prefect server start`` on 127.0.0.1 (its own
   PREFECT_HOME, analytics and UI off), started just before it runs so that its background
   services do not share the CPU with the other configurations;
4. the design's scaling limits, measured directly on the S3 server: listing the N seed keys
   (``list_objects_v2`` pages of 1,000), the commit (size of the newest ``commits/*.json`` and the
   time to read it back), the manifest (rows and bytes of the newest snapshot's ``source_files``
   Parquet file) and the merge (the ``build`` stage).

Reported: medians (min-max) of whole-process wall time, pipeline work (the summary's
``pipeline_seconds``), per-stage seconds, docs/s of pipeline work, peak memory of the process tree
(``bench.run.run_measured``: Dask workers are children of the run and are counted; the S3 and
Prefect servers are not) and the S3 requests each run made (moto's access log). Writes
OUT/scale-report.md, OUT/scale.json (raw numbers) and OUT/scale.svg (docs/s per configuration).
Both servers are stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from harness.prefect_server import PrefectServer
from harness.s3_server import MotoServer, put

from .common import add_common_options, log
from .corpus import ensure_corpus
from .machine import _version, machine
from .measure import _check, _last_json, clean_env, run_measured
from .report import _table

MB = 1024 * 1024
LIST_PAGE = 1000  # S3's (and moto's) default and maximum keys per list_objects_v2 page
VERSIONS = ("duckdb", "pyarrow", "prefect", "prefect-dask", "dask", "distributed", "s3fs", "moto", "fsspec")
PHASES = ("full", "noop")
PHASE_TITLES = {"full": "Full load", "noop": "No-op rerun"}


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    storage: str  # "local" or "s3"
    orchestrator: str  # "none" or "prefect" (the CLI's default: no --orchestrator given)
    runner: str
    workers: int

    def args(self) -> list[str]:
        orchestrator = ["--orchestrator", "none"] if self.orchestrator == "none" else []
        return [*orchestrator, "--runner", self.runner, "--workers", str(self.workers)]


CONFIGS = (
    Config("local-processes-2", "local disk, processes x2", "local", "none", "processes", 2),
    Config("s3-processes-2", "S3 -> S3, processes x2", "s3", "none", "processes", 2),
    Config("s3-dask-1", "S3 -> S3, Dask LocalCluster x1", "s3", "none", "dask", 1),
    Config("s3-dask-2", "S3 -> S3, Dask LocalCluster x2", "s3", "none", "dask", 2),
    Config("s3-prefect-dask-2", "S3 -> S3, Prefect + Dask x2", "s3", "prefect", "dask", 2),
)
BASELINE = CONFIGS[0].key


# --- helpers ----------------------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(s: dict[str, float], digits: int = 2) -> str:
    """``median (min-max)``, or just the median when there is one value."""
    med, lo, hi = (f"{s[k]:.{digits}f}" for k in ("median", "min", "max"))
    return med if lo == hi else f"{med} ({lo}-{hi})"


def request_counts(requests: list[tuple[str, str]]) -> dict[str, int]:
    """moto access-log lines by kind: LIST (GET with list-type), GET, PUT, HEAD, POST, DELETE."""
    counts: Counter[str] = Counter()
    for method, path in requests:
        counts["LIST" if method == "GET" and "list-type=" in path else method] += 1
    return dict(sorted(counts.items()))


# --- S3 -----------------------------------------------------------------------------------------------


def corpus_files(corpus: Path) -> list[Path]:
    """The documents (hidden files such as bench.run's corpus marker are not seeds)."""
    return [p for p in sorted(corpus.rglob("*")) if p.is_file() and not p.name.startswith(".")]


def upload(fs: Any, bucket: str, prefix: str, corpus: Path) -> dict[str, Any]:
    files = corpus_files(corpus)

    def one(path: Path) -> int:
        data = path.read_bytes()
        put(fs, bucket, f"{prefix}/{path.relative_to(corpus).as_posix()}", data)
        return len(data)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        sizes = list(pool.map(one, files))
    seconds = time.perf_counter() - t0
    return {"files": len(files), "bytes": sum(sizes), "seconds": seconds, "concurrency": 16}


def list_all(fs: Any, bucket: str, prefix: str) -> tuple[int, int]:
    """(keys, pages) of a full list_objects_v2 pagination of ``prefix``."""
    keys = pages = 0
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": LIST_PAGE}
    while True:
        resp = fs.call_s3("list_objects_v2", **kwargs)
        pages += 1
        keys += int(resp.get("KeyCount", len(resp.get("Contents", []))))
        if not resp.get("IsTruncated"):
            return keys, pages
        kwargs["ContinuationToken"] = resp["NextContinuationToken"]


def timed(fn: Any, times: int) -> tuple[Any, list[float]]:
    result, seconds = None, []
    for _ in range(times):
        t0 = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - t0)
    return result, seconds


def s3_limits(fs: Any, bucket: str, seeds_prefix: str, wh_prefix: str, n: int, repeat: int) -> dict[str, Any]:
    """The design's scaling limits, each with a short timing: listing, commit, manifest."""
    import pyarrow.parquet as pq

    times = max(3, repeat)
    (keys, pages), list_s = timed(lambda: list_all(fs, bucket, seeds_prefix + "/"), times)
    if keys != n:
        raise SystemExit(f"bench: listing s3://{bucket}/{seeds_prefix}/ found {keys} keys, expected {n}")

    commits = [
        e for e in fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=f"{wh_prefix}/commits/").get("Contents", [])
    ]
    newest = max((e for e in commits if e["Key"].endswith(".json")), key=lambda e: e["Key"])
    commit_path = f"{bucket}/{newest['Key']}"
    meta, commit_s = timed(lambda: json.loads(fs.cat_file(commit_path)), 5)
    entries = meta["files"]
    manifest = entries.get("source_files", [])
    manifest_files = []
    for e in manifest:
        path = f"{bucket}/{wh_prefix}/{e['file']}"
        _, read_s = timed(lambda path=path: pq.read_table(path, filesystem=fs), 3)
        md = pq.ParquetFile(path, filesystem=fs).metadata
        manifest_files.append(
            {
                "file": e["file"],
                "rows": int(e["rows"]),
                "bytes": int(fs.info(path)["size"]),
                "row_groups": md.num_row_groups,
                "read_s": stats(read_s),
            }
        )
    return {
        "listing": {"prefix": f"s3://{bucket}/{seeds_prefix}/", "keys": keys, "pages": pages, "seconds": stats(list_s)},
        "commit": {
            "key": f"s3://{commit_path}",
            "version": meta.get("version"),
            "bytes": int(newest["Size"]),
            "tables": len(entries),
            "data_files": sum(len(v) for v in entries.values()),
            "read_seconds": stats(commit_s),
        },
        "manifest": {
            "files": manifest_files,
            "rows": sum(f["rows"] for f in manifest_files),
            "bytes": sum(f["bytes"] for f in manifest_files),
        },
    }


def local_commit(warehouse: Path) -> dict[str, Any]:
    """Size of the newest commit of a local warehouse (same format), for comparison."""
    found = sorted((warehouse / "commits").glob("*.json"))
    if not found:
        return {}
    meta = json.loads(found[-1].read_text())
    manifest = meta["files"].get("source_files", [])
    return {
        "bytes": found[-1].stat().st_size,
        "data_files": sum(len(v) for v in meta["files"].values()),
        "manifest_rows": sum(int(e["rows"]) for e in manifest),
        "manifest_bytes": sum((warehouse / e["file"]).stat().st_size for e in manifest),
    }


# --- runs ---------------------------------------------------------------------------------------------


def run_pipeline(
    cfg: Config, phase: str, k: int, seeds: str, warehouse: str, env: dict[str, str], work: Path, n: int, moto: Any
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--seeds", seeds, "--warehouse", warehouse]
    cmd += [*cfg.args(), "--format", "json", "--quiet"]
    mark = moto.log_mark() if cfg.storage == "s3" else None
    m = run_measured(cmd, work / "logs" / f"{cfg.key}-{phase}-{k}.log", env, cwd=work)
    _check(m, f"pipeline run ({cfg.key}, {phase} {k + 1})")
    summary = _last_json(m.stdout)
    files = summary["files"]
    accounted = files["loaded"] + files["rejected"] + files["duplicate"]
    if accounted != n:
        raise SystemExit(
            f"bench: {cfg.key} {phase} {k + 1}: loaded {files['loaded']} + rejected {files['rejected']} + "
            f"duplicate {files['duplicate']} = {accounted}, expected {n} files\n{json.dumps(summary, indent=1)}"
        )
    if phase == "full" and files["parsed"] != n:
        raise SystemExit(f"bench: {cfg.key} full load {k + 1} parsed {files['parsed']} files, expected {n}")
    if summary.get("pipeline_seconds") is None:
        raise SystemExit(f"bench: {cfg.key} {phase} {k + 1}: the summary has no pipeline_seconds")
    requests = request_counts(moto.requests_since(mark)) if mark is not None else {}
    return {
        "config": cfg.key,
        "phase": phase,
        "repeat": k,
        "wall_s": m.wall_s,
        "pipeline_s": float(summary["pipeline_seconds"]),
        "prefect_s": summary.get("prefect_seconds"),
        "seconds": summary.get("seconds", {}),
        "files": files,
        "rows": summary.get("rows", {}),
        "runner": summary.get("runner"),
        "memory": m.summary(),
        "s3_requests": requests,
    }


def bench_config(
    cfg: Config, n: int, repeat: int, corpus: Path, work: Path, moto: Any, bucket: str, env: dict[str, str], keep: bool
) -> tuple[list[dict[str, Any]], str]:
    """Full load + no-op rerun, REPEAT times in fresh warehouses; returns the runs and the last warehouse."""
    runs = []
    warehouse = ""
    fs = moto.client() if cfg.storage == "s3" else None
    for k in range(repeat):
        if cfg.storage == "local":
            seeds = str(corpus)
            path = work / f"wh-{cfg.key}-{k}"
            shutil.rmtree(path, ignore_errors=True)
            warehouse = str(path)
        else:
            seeds = f"s3://{bucket}/seeds"
            warehouse = f"s3://{bucket}/wh-{cfg.key}-{k}"
        for phase in PHASES:
            r = run_pipeline(cfg, phase, k, seeds, warehouse, env, work, n, moto)
            log(
                f"{cfg.key} {phase} {k + 1}/{repeat}: pipeline {r['pipeline_s']:.2f} s, wall {r['wall_s']:.2f} s, "
                f"{n / r['pipeline_s']:.0f} docs/s"
            )
            runs.append(r)
        last = k + 1 == repeat
        if not (last and keep):  # keep the server's memory and the disk small: only the kept warehouse stays
            if fs is not None:
                fs.rm(warehouse.removeprefix("s3://"), recursive=True)
            elif not last:
                shutil.rmtree(warehouse, ignore_errors=True)
    return runs, warehouse


def aggregate(runs: list[dict[str, Any]], n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for phase in PHASES:
        rs = [r for r in runs if r["phase"] == phase]
        if not rs:
            continue
        stages = list(dict.fromkeys(s for r in rs for s in r["seconds"]))  # first-seen order: the run's order
        requests = sorted({q for r in rs for q in r["s3_requests"]})
        out[phase] = {
            "wall_s": stats([r["wall_s"] for r in rs]),
            "pipeline_s": stats([r["pipeline_s"] for r in rs]),
            "docs_per_s": stats([n / r["pipeline_s"] for r in rs]),
            "docs_per_s_wall": stats([n / r["wall_s"] for r in rs]),
            "tree_peak_mb": stats([r["memory"]["tree_peak_mb"] for r in rs]),
            "largest_mb": stats([r["memory"]["maxrss_mb"] for r in rs]),
            "processes": stats([float(r["memory"]["descendants"] + 1) for r in rs]),
            "stages": {s: stats([r["seconds"].get(s, 0.0) for r in rs]) for s in stages},
            "s3_requests": {q: statistics.median([r["s3_requests"].get(q, 0) for r in rs]) for q in requests},
            "parsed": stats([float(r["files"]["parsed"]) for r in rs]),
            "prefect_s": stats([float(r["prefect_s"]) for r in rs if r["prefect_s"] is not None]),
        }
    return out


# --- report -------------------------------------------------------------------------------------------


def _stage(a: dict[str, Any], stage: str) -> str:
    return f"{a['stages'][stage]['median']:.2f}" if stage in a["stages"] else "-"


def render(results: dict[str, Any]) -> str:
    """The Markdown report: one function per section, in the report's order."""
    agg: dict[str, Any] = results["aggregate"]
    labels = {cfg.key: cfg.label for cfg in CONFIGS}
    measured = [cfg for cfg in CONFIGS if cfg.key in agg]
    lines = [
        *_intro(results),
        *_machine_section(results),
        *_corpus_section(results),
        *_configurations_section(measured),
    ]
    for phase in PHASES:
        lines += _phase_section(phase, agg, measured, labels)
    lines += _prefect_overhead(agg, measured, labels)
    lines += _ratios_section(agg, measured, labels)
    lines += _limits_section(results, agg, measured)
    lines += _chart_and_notes(results)
    return "\n".join(lines)


def _intro(results: dict[str, Any]) -> list[str]:
    return [
        "# Running at scale: object storage and Dask",
        "",
        f"`{results['command']}` on {results['date']}, {results['n']} documents, {results['repeat']} repeat(s) per "
        "configuration, each in a fresh warehouse: full load, then a no-op rerun. Figures are medians "
        "(min-max when they differ).",
        "",
    ]


def _machine_section(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    la0, la1 = m["load_average_start"], results["load_average_end"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return [
        "## Machine",
        "",
        *_table(
            ["what", "value"],
            [
                ["CPU", f"{m['cpu']}, {m['usable_cores']} usable cores (os.cpu_count() {m['logical_cores']})"],
                ["RAM", f"{m['ram_gib']:.1f} GiB" if m["ram_gib"] else "unknown"],
                ["OS / Python", f"{m['os']} / {m['python']}"],
                ["load average at start (1/5/15 min)", " / ".join(f"{x:.2f}" for x in la0)],
                ["load average at end (1/5/15 min)", " / ".join(f"{x:.2f}" for x in la1)],
                ["versions", versions],
                ["commit", m["commit"]],
            ],
        ),
        "",
        "S3 is moto's server (`moto_server`, in memory, on 127.0.0.1), so requests cost a loopback round trip "
        "and moto's CPU on the same machine, not a network's latency: treat the S3 figures as the cost of "
        "the protocol, not of a real bucket.",
        "",
    ]


def _corpus_section(results: dict[str, Any]) -> list[str]:
    """The corpus, its upload to S3 (when S3 was measured) and the Prefect server's start-up (when used)."""
    n, c = results["n"], results["corpus"]
    lines = [
        "## Corpus and upload",
        "",
        f"`bench/generate.py`, seed {c['seed']}: {n} documents, {c['bytes'] / 1e6:.1f} MB in `{c['path']}`"
        + (f" (generated in {c['generated_s']:.1f} s)." if c.get("generated_s") else " (reused)."),
        "",
    ]
    up = results.get("upload")
    if up:
        lines += _table(
            ["files", "MB", f"upload (s, {up['concurrency']} concurrent PUTs)", "objects/s", "MB/s"],
            [
                [
                    str(up["files"]),
                    f"{up['bytes'] / 1e6:.1f}",
                    f"{up['seconds']:.2f}",
                    f"{up['files'] / up['seconds']:.0f}",
                    f"{up['bytes'] / 1e6 / up['seconds']:.1f}",
                ]
            ],
        )
        lines += ["", "Not a pipeline figure: it only puts the seeds where the S3 configurations read them."]
    if results.get("prefect_server"):
        ps = results["prefect_server"]
        lines += ["", f"Prefect server (`prefect server start`, SQLite) ready in {ps['startup_s']:.1f} s."]
    return lines


def _configurations_section(measured: list[Config]) -> list[str]:
    return [
        "",
        "## Configurations",
        "",
        *_table(
            ["configuration", "seeds -> warehouse", "command"],
            [
                [
                    f"`{cfg.key}`",
                    "local disk -> local disk" if cfg.storage == "local" else "S3 -> S3",
                    f"`pipeline run {' '.join(cfg.args())}`"
                    + (" with PREFECT_API_URL" if cfg.orchestrator == "prefect" else ""),
                ]
                for cfg in measured
            ],
        ),
    ]


def _phase_section(phase: str, agg: dict[str, Any], measured: list[Config], labels: dict[str, str]) -> list[str]:
    """One phase (full load or no-op rerun): the per-configuration figures, then the stage seconds."""
    return [
        "",
        f"## {PHASE_TITLES[phase]}",
        "",
        "*pipeline* = the run summary's `pipeline_seconds` (the `load_runs` row's work); *wall* = the whole "
        "CLI process (imports, cluster start-up, Prefect). docs/s = N / seconds. Peak tree = largest sum of "
        "RSS over the run's process tree at one poll (Dask workers included; servers excluded).",
        "",
        *_phase_table(phase, agg, measured, labels),
        *_stage_table(phase, agg, measured, labels),
    ]


def _phase_table(phase: str, agg: dict[str, Any], measured: list[Config], labels: dict[str, str]) -> list[str]:
    return _table(
        [
            "configuration",
            "pipeline (s)",
            "wall (s)",
            "docs/s (pipeline)",
            "docs/s (wall)",
            "files parsed",
            "peak tree (MiB)",
            "largest process (MiB)",
            "S3 requests",
        ],
        [
            [
                labels[cfg.key],
                fmt(a["pipeline_s"]),
                fmt(a["wall_s"]),
                fmt(a["docs_per_s"], 0),
                fmt(a["docs_per_s_wall"], 0),
                fmt(a["parsed"], 0),
                fmt(a["tree_peak_mb"], 0),
                fmt(a["largest_mb"], 0),
                ", ".join(f"{k} {v:g}" for k, v in a["s3_requests"].items()) or "-",
            ]
            for cfg in measured
            if (a := agg[cfg.key].get(phase))
        ],
    )


def _stage_table(phase: str, agg: dict[str, Any], measured: list[Config], labels: dict[str, str]) -> list[str]:
    """Stage seconds per configuration; the columns are every stage any configuration ran, first seen first."""
    stages: list[str] = []
    for cfg in measured:
        for s in agg[cfg.key].get(phase, {}).get("stages", {}):
            if s not in stages:
                stages.append(s)
    return [
        "",
        f"Stage seconds ({PHASE_TITLES[phase].lower()}, the summary's `seconds`):",
        "",
        *_table(
            ["configuration", *stages],
            [
                [
                    labels[cfg.key],
                    *(_stage(agg[cfg.key][phase], s) for s in stages),
                ]
                for cfg in measured
                if phase in agg[cfg.key]
            ],
        ),
    ]


def _prefect_overhead(agg: dict[str, Any], measured: list[Config], labels: dict[str, str]) -> list[str]:
    prefect = [cfg for cfg in measured if cfg.orchestrator == "prefect"]
    if not prefect:
        return []
    return [
        "",
        "Prefect overhead (the summary's `prefect_seconds`: process time outside pipeline work):",
        "",
        *_table(
            ["configuration", *[PHASE_TITLES[p] + " (s)" for p in PHASES]],
            [
                [labels[cfg.key], *(fmt(agg[cfg.key][p]["prefect_s"]) for p in PHASES if p in agg[cfg.key])]
                for cfg in prefect
            ],
        ),
    ]


def _ratios_section(agg: dict[str, Any], measured: list[Config], labels: dict[str, str]) -> list[str]:
    lines = ["", "## Ratios against local disk", ""]
    if BASELINE not in agg:
        return [*lines, f"`{BASELINE}` was not measured (--only), so there is no baseline."]
    base = agg[BASELINE]
    return [
        *lines,
        f"Median seconds of each configuration ÷ median seconds of `{BASELINE}` (above 1: slower than local disk).",
        "",
        *_table(
            ["configuration", *[f"{PHASE_TITLES[p]} {w}" for p in PHASES for w in ("pipeline", "wall")]],
            [
                [
                    labels[cfg.key],
                    *(
                        f"{agg[cfg.key][p][w]['median'] / base[p][w]['median']:.2f}"
                        for p in PHASES
                        for w in ("pipeline_s", "wall_s")
                    ),
                ]
                for cfg in measured
            ],
        ),
    ]


def _limits_section(results: dict[str, Any], agg: dict[str, Any], measured: list[Config]) -> list[str]:
    """The scaling limits measured on the S3 warehouse (listing, commit, manifest, merge), when there is one."""
    lim = results.get("limits")
    if not lim:
        return []
    build = {
        cfg.key: agg[cfg.key]["full"]["stages"].get("build")
        for cfg in measured
        if "full" in agg[cfg.key] and "build" in agg[cfg.key]["full"]["stages"]
    }
    return [
        "",
        "## Scaling limits",
        "",
        f"Measured on `{lim['warehouse']}` after its no-op rerun, and on the seeds prefix.",
        "",
        *_table(
            ["limit", "size", "time (s)", "notes"],
            [
                _listing_row(lim["listing"]),
                _commit_row(lim["commit"], lim.get("local_commit", {})),
                _manifest_row(lim["manifest"], lim.get("local_commit", {})),
                [
                    "the merge",
                    f"{results['n']} documents",
                    ", ".join(f"{k} {v['median']:.2f}" for k, v in build.items()) or "-",
                    "`build` stage of the full load (median per configuration)",
                ],
            ],
        ),
    ]


def _listing_row(lst: dict[str, Any]) -> list[str]:
    return [
        "listing the seeds",
        f"{lst['keys']} keys, {lst['pages']} pages",
        fmt(lst["seconds"], 3),
        f"full `list_objects_v2` pagination of `{lst['prefix']}` ({LIST_PAGE} keys a page, "
        f"sequential): {lst['keys'] / lst['seconds']['median']:.0f} keys/s",
    ]


def _commit_row(com: dict[str, Any], loc: dict[str, Any]) -> list[str]:
    return [
        "the commit",
        f"{com['bytes']:,} bytes",
        fmt(com["read_seconds"], 4),
        f"newest `commits/*.json` (version {com['version']}): {com['tables']} tables, "
        f"{com['data_files']} data files; read back and parsed"
        + (f"; local disk's commit: {loc['bytes']:,} bytes" if loc else ""),
    ]


def _manifest_row(man: dict[str, Any], loc: dict[str, Any]) -> list[str]:
    return [
        "the manifest",
        f"{man['rows']:,} rows, {man['bytes']:,} bytes",
        " + ".join(fmt(f["read_s"], 3) for f in man["files"]) or "-",
        f"`source_files` of the newest snapshot: {len(man['files'])} Parquet file(s), "
        f"{man['bytes'] / max(man['rows'], 1):.0f} bytes/row; read whole with pyarrow over s3fs"
        + (f"; local disk: {loc['manifest_rows']:,} rows, {loc['manifest_bytes']:,} bytes" if loc else ""),
    ]


def _chart_and_notes(results: dict[str, Any]) -> list[str]:
    lines = ["", "![docs/s of pipeline work per configuration](scale.svg)", ""]
    for note in results["notes"]:
        lines += [f"Note: {note}", ""]
    return lines


def svg_chart(results: dict[str, Any]) -> str:
    """Horizontal bars: docs/s of pipeline work (full load, median) per configuration."""
    agg = results["aggregate"]
    rows = [(cfg.label, agg[cfg.key]["full"]["docs_per_s"]["median"]) for cfg in CONFIGS if cfg.key in agg]
    label_w, bar_w, value_w, bar_h, gap, top = 250, 420, 90, 24, 10, 50
    width = label_w + bar_w + value_w
    height = top + len(rows) * (bar_h + gap) + 30
    peak = max((v for _, v in rows), default=1.0) or 1.0
    title = escape(f"Full load, docs/s of pipeline work (N = {results['n']})")
    subtitle = escape(f"median of {results['repeat']} run(s); longer is faster")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="22" font-size="15" font-weight="bold">{title}</text>',
        f'<text x="10" y="40" fill="#555">{subtitle}</text>',
    ]
    for i, (label, value) in enumerate(rows):
        y = top + i * (bar_h + gap)
        w = max(1.0, bar_w * value / peak)
        color = "#4c72b0" if i == 0 else "#dd8452"
        parts += [
            f'<text x="{label_w - 8}" y="{y + bar_h * 0.7:.1f}" text-anchor="end">{escape(label)}</text>',
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>',
            f'<text x="{label_w + w + 6:.1f}" y="{y + bar_h * 0.7:.1f}">{value:,.0f}</text>',
        ]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# --- main ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_options(
        p,
        n=20_000,
        n_what="documents in the corpus",
        repeat=3,
        repeat_help="runs per configuration; medians are reported (default 3)",
    )
    p.add_argument(
        "--only",
        action="append",
        choices=[c.key for c in CONFIGS],
        metavar="CONFIG",
        help="measure only this configuration, repeatable (default: all; " + ", ".join(c.key for c in CONFIGS) + ")",
    )
    args = p.parse_args(argv)
    if args.n < 1 or args.repeat < 1:
        p.error("--n and --repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    work = out / "work-scale"
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    configs = [c for c in CONFIGS if not args.only or c.key in args.only]
    command = "python -m bench.scale " + shlex.join(sys.argv[1:] if argv is None else argv)
    mach = machine()
    mach["versions"] = {p: _version(p) for p in VERSIONS}
    results: dict[str, Any] = {
        "command": command.strip(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "n": args.n,
        "repeat": args.repeat,
        "machine": mach,
        "configs": [asdict(c) for c in configs],
        "notes": [],
        "runs": [],
    }
    corpus, meta = ensure_corpus(out, args.n, args.seed)
    results["corpus"] = {**meta, "path": str(corpus)}
    log(f"corpus: {args.n} documents, {meta['bytes'] / 1e6:.1f} MB in {corpus}")

    moto = MotoServer()
    prefect: PrefectServer | None = None
    try:
        moto.start()
        log(f"moto S3 server on {moto.endpoint}")
        fs = moto.client()
        bucket = f"scale-{os.getpid()}"
        fs.call_s3("create_bucket", Bucket=bucket)
        s3_env = clean_env(**moto.env())
        if any(c.storage == "s3" for c in configs):
            up = upload(fs, bucket, "seeds", corpus)
            if up["files"] != args.n:
                raise SystemExit(f"bench: uploaded {up['files']} files, expected {args.n}")
            results["upload"] = up
            log(f"uploaded {up['files']} files, {up['bytes'] / 1e6:.1f} MB in {up['seconds']:.2f} s")
        local_env = clean_env()
        limits_wh = ""
        for cfg in configs:
            if cfg.orchestrator == "prefect":
                if prefect is None:
                    (work / "prefect-home").mkdir(exist_ok=True)
                    prefect = PrefectServer(home=work / "prefect-home")
                    startup = prefect.start()
                    results["prefect_server"] = {"startup_s": startup, "api_url": prefect.api_url}
                    log(f"Prefect server ready on {prefect.url} in {startup:.1f} s")
                env = prefect.client_env(**moto.env())
            else:
                env = s3_env if cfg.storage == "s3" else local_env
            keep = cfg.storage == "local" or not limits_wh
            runs, warehouse = bench_config(cfg, args.n, args.repeat, corpus, work, moto, bucket, env, keep)
            results["runs"] += runs
            if cfg.storage == "s3" and not limits_wh:
                limits_wh = warehouse
            if cfg.storage == "local":
                results["local_warehouse"] = warehouse
        if limits_wh:
            log(f"scaling limits on {limits_wh}")
            lim = s3_limits(fs, bucket, "seeds", limits_wh.removeprefix(f"s3://{bucket}/"), args.n, args.repeat)
            lim["warehouse"] = limits_wh
            if results.get("local_warehouse"):
                lim["local_commit"] = local_commit(Path(results["local_warehouse"]))
            results["limits"] = lim
    finally:
        if prefect is not None:
            prefect.stop()
        moto.stop()
        shutil.rmtree(moto.log_path.parent, ignore_errors=True)
    shutil.rmtree(work / "prefect-home", ignore_errors=True)

    results["aggregate"] = {
        cfg.key: aggregate([r for r in results["runs"] if r["config"] == cfg.key], args.n) for cfg in configs
    }
    for cfg in configs:
        noop = results["aggregate"][cfg.key].get("noop")
        if noop and noop["parsed"]["max"] > 0:
            results["notes"].append(
                f"`{cfg.key}`: the no-op rerun parsed up to {noop['parsed']['max']:.0f} files (expected 0)."
            )
    results["load_average_end"] = os.getloadavg()
    report = render(results)
    (out / "scale-report.md").write_text(report)
    (out / "scale.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "scale.svg").write_text(svg_chart(results))
    print(report)
    log(f"wrote {out / 'scale-report.md'}, {out / 'scale.json'} and {out / 'scale.svg'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
