"""The benchmark, in one command: corpus, pipeline loads, Prefect start-up, baselines, BI queries.

    python -m bench.run --n 100000 --repeat 3 [--out bench/out] [--seed 7] [--skip-dlt] [--skip-pandas]
                        [--skip-prefect] [--query-n N] [--query-month 2023-06] [--workers N]

One invocation, in order:

1. the corpus: bench/generate.py's N documents for the seed, under OUT/corpus-N-seedS; reused when
   its marker matches N, the seed and the generator's source;
2. ``--repeat`` times, each in a fresh warehouse: the full load (``pipeline run --orchestrator none``),
   a no-op rerun, and a rerun after rewriting 1% of the files (title and publishedDateTime; the
   files are restored afterwards). Reported: medians of the pipeline's own work (``finished_at -
   started_at`` of the run's ``load_runs`` row), of the whole process's wall time, docs/s, and peak
   memory of the process tree;
3. Prefect: the same full load once through the default orchestrator in ephemeral mode with a fresh
   Prefect home, then a no-op rerun with that home; start-up and overhead = process wall time minus
   pipeline work;
4. the baselines (bench/baselines/): a python-frontmatter + pandas script and a dlt pipeline, on the
   same corpus, ``--repeat`` times each, in .venv-bench (bench/requirements.txt, built on first use);
5. BI-style queries with DuckDB over the warehouse's catalog, and for the one-month range query the
   Parquet row groups read against the total.

It prints a Markdown report and writes it to OUT/report.md (raw numbers in OUT/report.json).

Peak memory: every process of the tree is polled (psutil, every 0.1 s) for its kernel high-water
mark (VmHWM), so per-process peaks are exact; "tree" is the largest sum of RSS seen at one poll (it
counts shared pages once per process). ``wait4``'s ru_maxrss cross-checks the largest process.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from . import envs, generate

REPO = Path(__file__).resolve().parent.parent
BASELINES = REPO / "bench" / "baselines"
PER_FOLDER = 10_000  # bench.generate's default layout
CORPUS_MARKER = ".bench-corpus.json"  # hidden: discovery skips it
POLL_SECONDS = 0.1
MB = 1024 * 1024
SECTIONS = (
    "## Machine",
    "## Corpus",
    "## Pipeline (`--orchestrator none`)",
    "## Prefect start-up (ephemeral)",
    "## Baselines",
    "## Ratios",
    "## BI queries (DuckDB)",
)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- measuring one process tree -----------------------------------------------------------------


@dataclass
class Measured:
    cmd: list[str]
    returncode: int
    wall_s: float
    stdout: str
    log_path: str
    parent_peak_mb: float  # VmHWM of the process we started
    child_peak_mb: float  # largest VmHWM among its descendants (0 when it had none)
    tree_peak_mb: float  # largest sum of RSS over the tree at one poll
    maxrss_mb: float  # wait4 ru_maxrss: largest single process, per the kernel
    descendants: int  # distinct descendant processes seen

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        del data["stdout"]
        return data


def _status_kb(pid: int) -> tuple[int, int] | None:
    """(VmHWM, VmRSS) in KiB, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            text = fh.read()
    except OSError:
        return None
    hwm = rss = 0
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return hwm, rss


def _descendants(pid: int) -> list[int]:
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        pass
    except Exception:  # the process exited between polls
        return []
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def run_measured(
    cmd: list[str], log_path: Path, env: dict[str, str], cwd: Path | None = None, timeout: float = 7200
) -> Measured:
    """Run CMD to completion, polling its process tree's memory; stdout returned, stderr to LOG_PATH."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    peaks: dict[int, int] = {}
    tree_peak = 0
    done = threading.Event()
    with open(log_path, "wb") as err, open(str(log_path) + ".stdout", "w+b") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True)

        def poll() -> None:
            nonlocal tree_peak
            while not done.is_set():
                total = 0
                for pid in [proc.pid, *_descendants(proc.pid)]:
                    st = _status_kb(pid)
                    if st is not None:
                        peaks[pid] = max(peaks.get(pid, 0), st[0])
                        total += st[1]
                tree_peak = max(tree_peak, total)
                done.wait(POLL_SECONDS)

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            done.set()
            poller.join()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read().decode("utf-8", "replace")
    children = [kb for pid, kb in peaks.items() if pid != proc.pid]
    return Measured(
        cmd=cmd,
        returncode=proc.returncode,
        wall_s=wall,
        stdout=stdout,
        log_path=str(log_path),
        parent_peak_mb=peaks.get(proc.pid, 0) / 1024,
        child_peak_mb=max(children, default=0) / 1024,
        tree_peak_mb=tree_peak / 1024,
        maxrss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        descendants=len(children),
    )


def _check(m: Measured, what: str) -> None:
    if m.returncode != 0:
        tail = Path(m.log_path).read_text(errors="replace")[-3000:]
        raise SystemExit(f"bench: {what} exited {m.returncode}: {shlex.join(m.cmd)}\n{m.stdout[-2000:]}\n{tail}")


def _last_json(text: str) -> dict[str, Any]:
    """The JSON document a command printed (the pipeline's summary, a baseline's last line)."""
    text = text.strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = json.loads(text.splitlines()[-1])
    assert isinstance(data, dict)
    return data


# --- corpus ---------------------------------------------------------------------------------------


def generator_digest() -> str:
    return hashlib.sha256(Path(generate.__file__).read_bytes()).hexdigest()


def ensure_corpus(out: Path, n: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """OUT/corpus-N-seedS, generated unless a complete, clean one for the same generator is there."""
    path = out / f"corpus-{n}-seed{seed}"
    marker = path / CORPUS_MARKER
    want = {"n": n, "seed": seed, "generator_sha256": generator_digest()}
    if marker.exists():
        meta = json.loads(marker.read_text())
        if {k: meta.get(k) for k in want} == want and not meta.get("dirty"):
            return path, {**meta, "generated_s": None}
    if path.exists():
        shutil.rmtree(path)
    log(f"generating {n} documents (seed {seed}) into {path}")
    t0 = time.perf_counter()
    size = generate.generate(str(path), n, seed, per_folder=PER_FOLDER)
    meta = {**want, "bytes": size, "dirty": False}
    marker.write_text(json.dumps(meta))
    return path, {**meta, "generated_s": time.perf_counter() - t0}


def doc_path(corpus: Path, i: int) -> Path:
    return corpus / f"part-{i // PER_FOLDER:04d}" / f"doc-{i:08d}.md"


def change_sample(n: int, seed: int) -> list[int]:
    """The 1% of documents the change rerun rewrites: same N and seed, same files."""
    return sorted(random.Random(f"bench-change-{seed}").sample(range(n), max(1, n // 100)))


_TITLE = re.compile(r"^title: (.*)$", re.M)
_PUBLISHED = re.compile(r"^publishedDateTime: (\S+)$", re.M)


def changed_text(text: str) -> str:
    """A new title and a publishedDateTime one hour later (added when the document has none)."""
    title = _TITLE.search(text)
    assert title, "generated documents have a top-level title"
    text = text[: title.start()] + f'title: "Updated: {title.group(1).strip(chr(34))}"' + text[title.end() :]
    published = _PUBLISHED.search(text)
    if published:
        moment = datetime.fromisoformat(published.group(1)) + timedelta(hours=1)
        return text[: published.start(1)] + moment.isoformat() + text[published.end(1) :]
    end = _TITLE.search(text)
    assert end
    return text[: end.end()] + "\npublishedDateTime: 2024-12-31T12:00:00Z" + text[end.end() :]


@contextlib.contextmanager
def changed_files(corpus: Path, indices: list[int]) -> Iterator[int]:
    """Rewrite the sampled files; restore their bytes afterwards (the marker says dirty meanwhile)."""
    marker = corpus / CORPUS_MARKER
    meta = json.loads(marker.read_text())
    originals = {i: doc_path(corpus, i).read_bytes() for i in indices}
    marker.write_text(json.dumps({**meta, "dirty": True}))
    try:
        for i, data in originals.items():
            doc_path(corpus, i).write_bytes(changed_text(data.decode("utf-8")).encode("utf-8"))
        yield len(originals)
    finally:
        for i, data in originals.items():
            doc_path(corpus, i).write_bytes(data)
        marker.write_text(json.dumps({**meta, "dirty": False}))


# --- the pipeline -----------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without PIPELINE_* settings or a Prefect API/profile to talk to."""
    drop = ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE", "PREFECT_HOME")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_") and k not in drop}
    env.update(extra)
    return env


def pipeline_cmd() -> list[str]:
    script = Path(sys.executable).parent / "pipeline"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipeline.cli"]


def load_run_row(warehouse: Path, run_id: str) -> dict[str, Any]:
    files = sorted(glob.glob(str(warehouse / "current" / "load_runs" / "*.parquet")))
    rows = [r for f in files for r in pq.read_table(f).to_pylist() if r["run_id"] == run_id]
    if not rows:
        raise SystemExit(f"bench: run {run_id} has no load_runs row in {warehouse}")
    return rows[0]


@dataclass
class PipelineRun:
    label: str
    wall_s: float
    work_s: float
    files_parsed: int
    summary: dict[str, Any]
    memory: dict[str, Any] = field(default_factory=dict)


def run_pipeline(
    label: str,
    corpus: Path,
    warehouse: Path,
    logs: Path,
    orchestrator: str = "none",
    workers: int | None = None,
    env: dict[str, str] | None = None,
) -> PipelineRun:
    cmd = [*pipeline_cmd(), "run", "--seeds", str(corpus), "--warehouse", str(warehouse)]
    cmd += ["--orchestrator", orchestrator, "--format", "json", "--quiet"]
    if workers:
        cmd += ["--workers", str(workers)]
    m = run_measured(cmd, logs / f"{label}.log", env or clean_env(), cwd=warehouse.parent)
    _check(m, f"pipeline run ({label})")
    summary = _last_json(m.stdout)
    row = load_run_row(warehouse, summary["run_id"])
    work = (row["finished_at"] - row["started_at"]).total_seconds()
    return PipelineRun(label, m.wall_s, work, int(row["files_parsed"]), summary, m.summary())


def bench_pipeline(
    corpus: Path, n: int, seed: int, work: Path, repeat: int, workers: int | None
) -> tuple[dict[str, list[PipelineRun]], Path]:
    """Full load, no-op rerun and 1%-changed rerun, REPEAT times in fresh warehouses."""
    runs: dict[str, list[PipelineRun]] = {"full": [], "noop": [], "change": []}
    sample = change_sample(n, seed)
    warehouse = work / "warehouse-0"
    for k in range(repeat):
        warehouse = work / f"warehouse-{k}"
        shutil.rmtree(warehouse, ignore_errors=True)
        logs = work / "logs"
        full = run_pipeline(f"full-{k}", corpus, warehouse, logs, workers=workers)
        log(f"full load {k + 1}/{repeat}: work {full.work_s:.2f} s, wall {full.wall_s:.2f} s")
        noop = run_pipeline(f"noop-{k}", corpus, warehouse, logs, workers=workers)
        log(f"no-op rerun {k + 1}/{repeat}: work {noop.work_s:.2f} s, wall {noop.wall_s:.2f} s")
        with changed_files(corpus, sample):
            change = run_pipeline(f"change-{k}", corpus, warehouse, logs, workers=workers)
        log(f"1% changed rerun {k + 1}/{repeat}: work {change.work_s:.2f} s, wall {change.wall_s:.2f} s")
        runs["full"].append(full)
        runs["noop"].append(noop)
        runs["change"].append(change)
        if k + 1 < repeat:
            shutil.rmtree(warehouse)  # keep only the last one (queried below)
    return runs, warehouse


def bench_prefect(corpus: Path, work: Path, workers: int | None) -> list[PipelineRun]:
    """The default orchestrator, ephemeral: a full load with a fresh Prefect home, then a no-op rerun."""
    home = work / "prefect-home"
    warehouse = work / "warehouse-prefect"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(warehouse, ignore_errors=True)
    home.mkdir(parents=True)
    env = clean_env(PREFECT_HOME=str(home))
    runs = []
    for label in ("prefect-full", "prefect-noop"):
        r = run_pipeline(label, corpus, warehouse, work / "logs", orchestrator="prefect", workers=workers, env=env)
        log(f"{label}: wall {r.wall_s:.2f} s, pipeline work {r.work_s:.2f} s")
        runs.append(r)
    shutil.rmtree(warehouse)
    return runs


# --- baselines -------------------------------------------------------------------------------------


@dataclass
class BaselineRun:
    tool: str
    wall_s: float
    inner_s: float
    docs: int
    rows: dict[str, int]
    versions: dict[str, str]
    python: str
    memory: dict[str, Any]


def baseline_python(tool: str, notes: list[str]) -> str:
    if tool == "pandas" and importlib.util.find_spec("pandas") is not None:
        return sys.executable
    python, built = envs.ensure_venv()
    if built is not None:
        notes.append(
            f"built {envs.VENV.name} from bench/requirements.txt in {built:.0f} s (before, and not part of, any timing)"
        )
    return str(python)


def bench_baseline(tool: str, corpus: Path, work: Path, repeat: int, notes: list[str]) -> list[BaselineRun]:
    script = BASELINES / {"pandas": "pandas_script.py", "dlt": "dlt_pipeline.py"}[tool]
    python = baseline_python(tool, notes)
    runs = []
    for k in range(repeat):
        dest = work / f"baseline-{tool}"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        env = clean_env(RUNTIME__DLTHUB_TELEMETRY="false", DLT_DATA_DIR=str(dest / ".dlt-data"))
        m = run_measured([python, str(script), str(corpus), str(dest)], work / "logs" / f"{tool}-{k}.log", env, dest)
        _check(m, f"{tool} baseline")
        out = _last_json(m.stdout)
        runs.append(
            BaselineRun(tool, m.wall_s, out["seconds"], out["docs"], out["rows"], out["versions"], python, m.summary())
        )
        log(f"{tool} baseline {k + 1}/{repeat}: wall {m.wall_s:.2f} s")
        shutil.rmtree(dest)
    return runs


# --- BI queries --------------------------------------------------------------------------------------


def month_range(month: str) -> tuple[datetime, datetime]:
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def queries(month: str) -> list[tuple[str, str]]:
    start, end = (f"TIMESTAMPTZ '{d:%Y-%m-%d %H:%M:%S}+00'" for d in month_range(month))
    return [
        (
            "articles per provider per month",
            "SELECT p.name AS provider, date_trunc('month', a.published_at) AS month, count(*) AS articles "
            "FROM articles a JOIN providers p USING (provider_id) GROUP BY ALL ORDER BY provider, month",
        ),
        (
            f"top topics in {month}",
            "SELECT t.topic, count(*) AS articles FROM article_topics t JOIN articles a USING (article_id) "
            f"WHERE a.published_at >= {start} AND a.published_at < {end} "
            "GROUP BY t.topic ORDER BY articles DESC, t.topic LIMIT 10",
        ),
        (
            "related → articles join",
            "SELECT a.provider_name, count(*) AS related_entries, count(DISTINCT r.article_id) AS listing_articles, "
            "avg(a.quality) AS avg_quality FROM related_articles r "
            "JOIN articles a ON a.article_id = r.related_article_id GROUP BY ALL ORDER BY related_entries DESC",
        ),
    ]


def _connect(warehouse: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(warehouse / "catalog.duckdb"), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    return con


def time_queries(warehouse: Path, month: str, runs: int = 5) -> list[dict[str, Any]]:
    """First execution and the median of RUNS more, each fetched to Python, on one connection."""
    con = _connect(warehouse)
    results = []
    try:
        for name, sql in queries(month):
            times, rows = [], 0
            for _ in range(runs + 1):
                t0 = time.perf_counter()
                rows = len(con.execute(sql).fetchall())
                times.append(time.perf_counter() - t0)
            results.append(
                {
                    "query": name,
                    "sql": sql,
                    "first_ms": times[0] * 1000,
                    "median_ms": statistics.median(times[1:]) * 1000,
                }
            )
            results[-1]["rows"] = rows
    finally:
        con.close()
    return results


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def row_group_pruning(warehouse: Path, month: str) -> dict[str, Any]:
    """Row groups of articles/*.parquet whose published_at min/max overlap the month, and DuckDB's count."""
    start, end = month_range(month)
    files = sorted(glob.glob(str(warehouse / "current" / "articles" / "*.parquet")))
    stats = {"files": len(files), "files_overlapping": 0, "row_groups": 0, "row_groups_overlapping": 0}
    stats |= {"rows": 0, "rows_overlapping": 0}
    for f in files:
        meta = pq.ParquetFile(f).metadata
        col = meta.schema.names.index("published_at")
        hit = False
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            st = rg.column(col).statistics
            lo, hi = (_utc(st.min), _utc(st.max)) if st is not None and st.has_min_max else (None, None)
            # no statistics (e.g. all NULL): a reader cannot skip it unless it knows it is all NULL
            overlap = lo is None or hi is None or (lo < end and hi >= start)
            if st is not None and st.null_count == rg.num_rows:
                overlap = False
            stats["row_groups"] += 1
            stats["rows"] += rg.num_rows
            if overlap:
                hit = True
                stats["row_groups_overlapping"] += 1
                stats["rows_overlapping"] += rg.num_rows
        stats["files_overlapping"] += hit
    stats |= duckdb_scan_counts(warehouse, queries(month)[1][1])
    return stats


def duckdb_scan_counts(warehouse: Path, sql: str) -> dict[str, Any]:
    """EXPLAIN ANALYZE (JSON profile): row groups the filtered articles scan read, of how many."""
    con = _connect(warehouse)
    try:
        con.execute("PRAGMA enable_profiling = 'json'")
        profile = json.loads(con.execute("EXPLAIN ANALYZE " + sql).fetchall()[0][1])
        con.execute("PRAGMA disable_profiling")
    finally:
        con.close()
    found: dict[str, Any] = {}

    def walk(op: dict[str, Any]) -> None:
        info = op.get("extra_info") or {}
        if op.get("type") == "TABLE_SCAN" and "published_at" in str(info.get("Filters", "")):
            found.update(
                duckdb_row_groups_scanned=op.get("row_groups_scanned"),
                duckdb_row_groups_total=op.get("total_row_groups_to_scan"),
                duckdb_rows_scanned=op.get("rows_scanned"),
            )
        for child in op.get("children", []):
            walk(child)

    for op in profile.get("operator", []):
        walk(op)
    return found


def ensure_query_warehouse(out: Path, n: int, seed: int, workers: int | None) -> tuple[Path, dict[str, Any]]:
    """A loaded warehouse for --query-n documents, reused while its corpus is the same."""
    corpus, meta = ensure_corpus(out, n, seed)
    warehouse = out / f"warehouse-query-{n}-seed{seed}"
    marker = out / f"warehouse-query-{n}-seed{seed}.json"
    key = {k: meta[k] for k in ("n", "seed", "generator_sha256")}
    if marker.exists() and json.loads(marker.read_text()).get("corpus") == key and (warehouse / "current").exists():
        return warehouse, {"loaded_s": None, **key}
    shutil.rmtree(warehouse, ignore_errors=True)
    marker.unlink(missing_ok=True)
    log(f"loading {n} documents for the queries into {warehouse}")
    run = run_pipeline(f"query-load-{n}", corpus, warehouse, out / "work" / "logs", workers=workers)
    marker.write_text(json.dumps({"corpus": key}))
    return warehouse, {"loaded_s": run.wall_s, **key}


# --- machine ---------------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    cpu = re.search(r"^model name\s*:\s*(.+)$", _read("/proc/cpuinfo"), re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.M)
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    git = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return {
        "cpu": cpu.group(1).strip() if cpu else platform.processor() or "unknown",
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "usable_cores": len(os.sched_getaffinity(0)),
        "ram_gib": int(mem.group(1)) / MB if mem else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_start": os.getloadavg(),
        "versions": {p: _version(p) for p in ("duckdb", "pyarrow", "prefect", "python-frontmatter", "PyYAML")},
        "commit": git.stdout.strip() or "unknown",
    }


# --- report ---------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def f2(x: float) -> str:
    return f"{x:.2f}"


def f0(x: float) -> str:
    return f"{x:.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _mem(runs: list[Any], key: str) -> float:
    return median([r.memory[key] for r in runs])


def render(results: dict[str, Any]) -> str:
    m, c, n = results["machine"], results["corpus"], results["n"]
    lines = [
        "# Benchmark report",
        "",
        f"`{results['command']}` — {results['date']}, commit `{m['commit']}`, {results['repeat']} repeat(s), "
        "medians shown. Times in seconds, memory in MiB, docs/s = corpus documents ÷ seconds.",
        "",
        "## Machine",
        "",
        *_table(
            ["what", "value"],
            [
                ["CPU", m["cpu"]],
                [
                    "cores (logical / physical / usable)",
                    f"{m['logical_cores']} / {m['physical_cores']} / {m['usable_cores']}",
                ],
                ["RAM (GiB)", f"{m['ram_gib']:.1f}" if m["ram_gib"] else "unknown"],
                ["OS", m["os"]],
                ["Python", m["python"]],
                *[[name, v] for name, v in m["versions"].items()],
                *[[name, v] for name, v in results.get("baseline_versions", {}).items()],
                ["load average at start (1/5/15 min)", " / ".join(f"{x:.2f}" for x in m["load_average_start"])],
                ["load average at end (1/5/15 min)", " / ".join(f"{x:.2f}" for x in results["load_average_end"])],
            ],
        ),
        "",
        "## Corpus",
        "",
        *_table(
            ["what", "value"],
            [
                ["documents", str(c["n"])],
                ["seed", str(c["seed"])],
                ["size (MB)", f"{c['bytes'] / 1e6:.1f}"],
                ["average (KB/doc)", f"{c['bytes'] / c['n'] / 1e3:.2f}"],
                ["generated in (s)", f2(c["generated_s"]) if c["generated_s"] is not None else "reused"],
                ["path", f"`{c['path']}`"],
            ],
        ),
        "",
    ]
    runs = results["pipeline"]
    full = runs["full"]
    full_work, full_wall = median([r.work_s for r in full]), median([r.wall_s for r in full])
    lines += [
        "## Pipeline (`--orchestrator none`)",
        "",
        f"Each repeat starts from an empty warehouse; workers: {results['workers'] or 'default (CPU count)'}. "
        "*work* = `finished_at − started_at` of the run's `load_runs` row; *wall* = the whole `pipeline run` "
        "process (interpreter start, imports, summary). The 1% rerun rewrites the title and publishedDateTime "
        f"of {results['changed_files']} files.",
        "",
        *_table(
            ["run", "work (s)", "wall (s)", "docs/s (work)", "docs/s (wall)", "files parsed"],
            [
                [
                    label,
                    f2(median([r.work_s for r in rs])),
                    f2(median([r.wall_s for r in rs])),
                    f0(n / median([r.work_s for r in rs])),
                    f0(n / median([r.wall_s for r in rs])),
                    f0(median([r.files_parsed for r in rs])),
                ]
                for label, rs in (
                    ("full load", full),
                    ("no-op rerun", runs["noop"]),
                    ("1% changed rerun", runs["change"]),
                )
            ],
        ),
        "",
        "Peak memory (MiB) of the process tree:",
        "",
        *_table(
            ["run", "parent", "largest child", "children", "tree (sum of RSS)", "largest (wait4)"],
            [
                [
                    label,
                    f0(_mem(rs, "parent_peak_mb")),
                    f0(_mem(rs, "child_peak_mb")),
                    f0(_mem(rs, "descendants")),
                    f0(_mem(rs, "tree_peak_mb")),
                    f0(_mem(rs, "maxrss_mb")),
                ]
                for label, rs in (
                    ("full load", full),
                    ("no-op rerun", runs["noop"]),
                    ("1% changed rerun", runs["change"]),
                )
            ],
        ),
        "",
        "Rows after the full load: " + ", ".join(f"{t} {v}" for t, v in full[-1].summary["rows"].items()) + ".",
        "",
        "Stage seconds of the full load (median): "
        + ", ".join(
            f"{s} {median([r.summary['seconds'].get(s, 0.0) for r in full]):.2f}" for s in full[-1].summary["seconds"]
        )
        + ".",
        "",
        "## Prefect start-up (ephemeral)",
        "",
    ]
    prefect: list[PipelineRun] = results["prefect"]
    if prefect:
        lines += [
            "`pipeline run` with the default orchestrator and no API URL: Prefect starts a temporary local server. "
            "The first run has a fresh Prefect home (its database is created), the second reuses it (no-op rerun). "
            "*start-up + overhead* = process wall − pipeline work; *CLI* = the `prefect_seconds` the CLI reports "
            "(its own wall time minus pipeline work, interpreter start excluded).",
            "",
            *_table(
                [
                    "run",
                    "wall (s)",
                    "pipeline work (s)",
                    "start-up + overhead (s)",
                    "CLI prefect_seconds",
                    "peak tree (MiB)",
                ],
                [
                    [
                        "full load, fresh Prefect home" if r.label == "prefect-full" else "no-op rerun, existing home",
                        f2(r.wall_s),
                        f2(r.work_s),
                        f2(r.wall_s - r.work_s),
                        f2(r.summary.get("prefect_seconds") or 0.0),
                        f0(r.memory["tree_peak_mb"]),
                    ]
                    for r in prefect
                ],
            ),
            "",
            f"Same load without Prefect (median above): wall {f2(full_wall)} s, work {f2(full_work)} s.",
        ]
    else:
        lines.append("skipped (--skip-prefect)")
    lines += ["", "## Baselines", ""]
    baselines: dict[str, list[BaselineRun]] = results["baselines"]
    rows = []
    for tool in ("pandas", "dlt"):
        bs = baselines.get(tool)
        if not bs:
            rows.append([tool, "skipped", "", "", "", "", ""])
            continue
        wall, inner = median([b.wall_s for b in bs]), median([b.inner_s for b in bs])
        rows.append(
            [
                tool,
                f2(wall),
                f2(inner),
                f0(n / wall),
                f0(n / inner),
                f0(_mem(bs, "tree_peak_mb")),
                f0(_mem(bs, "maxrss_mb")),
            ]
        )
    lines += [
        "Same corpus, one process each (bench/baselines/). *wall* = the whole process; *work* = the script's own "
        "timer (imports excluded).",
        "",
        *_table(
            ["tool", "wall (s)", "work (s)", "docs/s (wall)", "docs/s (work)", "peak tree (MiB)", "largest (wait4)"],
            [
                [
                    "pipeline",
                    f2(full_wall),
                    f2(full_work),
                    f0(n / full_wall),
                    f0(n / full_work),
                    f0(_mem(full, "tree_peak_mb")),
                    f0(_mem(full, "maxrss_mb")),
                ],
                *rows,
            ],
        ),
        "",
        "Rows per table (a sanity check that every tool read the same data):",
        "",
        *_table(
            ["table", "pipeline", *[t for t in ("pandas", "dlt") if baselines.get(t)]],
            [
                [
                    ours,
                    str(full[-1].summary["rows"].get(ours, "")),
                    *[str(baselines[t][-1].rows.get(theirs, "")) for t in ("pandas", "dlt") if baselines.get(t)],
                ]
                for ours, theirs in (
                    ("articles", "articles"),
                    ("article_topics", "topics"),
                    ("article_images", "images"),
                    ("related_articles", "related"),
                    ("related_article_images", "related_images"),
                )
            ],
        ),
    ]
    for note in results["notes"]:
        lines += ["", f"Note: {note}."]
    lines += [
        "",
        "## Ratios",
        "",
        "Pipeline docs/s ÷ baseline docs/s (above 1: the pipeline is faster). *wall*: whole processes on both "
        "sides; *work*: the pipeline's `load_runs` time against the baseline's own timer.",
        "",
    ]
    ratio_rows = []
    for tool in ("pandas", "dlt"):
        bs = baselines.get(tool)
        if not bs:
            ratio_rows.append([tool, "skipped", "skipped"])
            continue
        wall, inner = median([b.wall_s for b in bs]), median([b.inner_s for b in bs])
        ratio_rows.append([tool, f2(wall / full_wall), f2(inner / full_work)])
    lines += _table(["baseline", "docs/s ratio (wall)", "docs/s ratio (work)"], ratio_rows)
    q = results["queries"]
    p = q["pruning"]
    lines += [
        "",
        "## BI queries (DuckDB)",
        "",
        f"Over `{q['warehouse']}` ({q['n']} documents) through `catalog.duckdb` (read-only, as a BI tool "
        "connects); results fetched to Python; first execution, then the median of 5 more.",
        "",
        *_table(
            ["query", "first (ms)", "median (ms)", "rows"],
            [[r["query"], f"{r['first_ms']:.1f}", f"{r['median_ms']:.1f}", str(r["rows"])] for r in q["timings"]],
        ),
        "",
        f"Row groups for the {q['month']} range over `current/articles/*.parquet`:",
        "",
        *_table(
            ["what", "read / overlapping", "total"],
            [
                ["files whose published_at min/max overlap", str(p["files_overlapping"]), str(p["files"])],
                ["row groups whose min/max overlap", str(p["row_groups_overlapping"]), str(p["row_groups"])],
                ["rows in those row groups", str(p["rows_overlapping"]), str(p["rows"])],
                [
                    "row groups DuckDB scanned (EXPLAIN ANALYZE)",
                    str(p.get("duckdb_row_groups_scanned", "n/a")),
                    str(p.get("duckdb_row_groups_total", "n/a")),
                ],
            ],
        ),
        "",
    ]
    sqls = "\n".join(f"-- {r['query']}\n{r['sql']};" for r in q["timings"])
    lines += ["<details><summary>SQL</summary>", "", "```sql", sqls, "```", "", "</details>", ""]
    return "\n".join(lines)


def to_jsonable(value: Any) -> Any:
    if isinstance(value, PipelineRun | BaselineRun):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=100_000, help="documents in the corpus (default 100000)")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement; medians are reported (default 3)")
    p.add_argument("--seed", type=int, default=7, help="corpus seed (default 7)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="output folder (default bench/out)")
    p.add_argument("--workers", type=int, help="pipeline parser processes (default: the pipeline's, CPU count)")
    p.add_argument("--skip-pandas", action="store_true", help="skip the pandas baseline")
    p.add_argument("--skip-dlt", action="store_true", help="skip the dlt baseline")
    p.add_argument("--skip-prefect", action="store_true", help="skip the Prefect start-up measurement")
    p.add_argument("--query-n", type=int, help="documents in the warehouse the BI queries run on (default: --n)")
    p.add_argument("--query-month", default="2023-06", help="month of the date-range query (default 2023-06)")
    args = p.parse_args(argv)
    if args.n < 1 or args.repeat < 1 or (args.query_n is not None and args.query_n < 1):
        p.error("--n, --repeat and --query-n must be positive")
    try:
        month_range(args.query_month)
    except ValueError:
        p.error("--query-month must look like 2023-06")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    work = out / "work"
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(exist_ok=True)
    shutil.rmtree(work / "logs", ignore_errors=True)
    command = "python -m bench.run " + shlex.join(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {
        "command": command.strip(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "n": args.n,
        "repeat": args.repeat,
        "workers": args.workers,
        "machine": machine(),
        "notes": [],
    }
    corpus, meta = ensure_corpus(out, args.n, args.seed)
    results["corpus"] = {**meta, "path": str(corpus)}
    results["changed_files"] = len(change_sample(args.n, args.seed))
    log(f"corpus: {args.n} documents, {meta['bytes'] / 1e6:.1f} MB in {corpus}")

    results["pipeline"], warehouse = bench_pipeline(corpus, args.n, args.seed, work, args.repeat, args.workers)
    results["prefect"] = [] if args.skip_prefect else bench_prefect(corpus, work, args.workers)

    results["baselines"] = {}
    versions: dict[str, str] = {}
    for tool, skip in (("pandas", args.skip_pandas), ("dlt", args.skip_dlt)):
        if not skip:
            runs = bench_baseline(tool, corpus, work, args.repeat, results["notes"])
            results["baselines"][tool] = runs
            versions |= {f"{k} (baselines)": v for k, v in runs[-1].versions.items()}
            if tool == "pandas" and runs[-1].python == sys.executable:
                results["notes"].append("pandas ran in the project's venv (pandas is installed there)")
    results["baseline_versions"] = versions

    query_n = args.query_n or args.n
    if query_n == args.n:
        query_wh, qmeta = warehouse, {"loaded_s": None}
    else:
        query_wh, qmeta = ensure_query_warehouse(out, query_n, args.seed, args.workers)
    log(f"BI queries over {query_wh}")
    results["queries"] = {
        "warehouse": str(query_wh),
        "n": query_n,
        "month": args.query_month,
        **qmeta,
        "timings": time_queries(query_wh, args.query_month),
        "pruning": row_group_pruning(query_wh, args.query_month),
    }
    results["load_average_end"] = os.getloadavg()

    report = render(results)
    (out / "report.md").write_text(report)
    (out / "report.json").write_text(json.dumps(to_jsonable(results), indent=2, default=str))
    print(report)
    log(f"wrote {out / 'report.md'} and {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
