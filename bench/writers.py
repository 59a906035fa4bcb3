"""The benchmark's writer dimension: the same articles as each real YAML writer writes them.

    python -m bench.writers --n 10000 [--seed 7] [--repeat 1] [--out bench/out] [--workers N]
                            [--flow] [--skip-dlt] [--before REV]

For every writer family (PyYAML default and ``allow_unicode``, ruamel.yaml, js-yaml, npm ``yaml``;
``harness/writers.py``, block style, or flow style with ``--flow``), on the same N articles:

1. the corpus: OUT/writers-N-seedS-STYLE/WRITER/, seed files around the writer's frontmatter; reused
   while its marker matches N, the seed, the style and the writers' sources; only the articles that every
   writer wrote as YAML that both the strict loader and python-frontmatter's loader read (the same
   documents for every writer and tool);
2. the fast YAML path's answer rate on the documents the strict loader accepts (``fast_yaml``), and with
   ``--before REV`` the same for ``pipeline/read/fast_yaml.py`` as it was at that git revision;
3. ``--repeat`` full loads (``pipeline run --orchestrator none``, a fresh warehouse each): pipeline work
   (``load_runs``), wall time, docs/s;
4. the baselines on the same files in the same run (bench/baselines/, ``bench.measure.bench_baseline``):
   the one-process python-frontmatter + pandas/pyarrow script and (unless ``--skip-dlt``) dlt.

Prints a Markdown table and writes OUT/writers[-flow].md and .json. Reuses bench.measure, bench.machine,
bench.report's helpers and bench.common; the npm writers need ``npm ci --prefix tests/writers``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import types
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.read import fast_yaml
from pipeline.read.problems import ProblemError
from pipeline.read.strict_yaml import load_strict

from .common import REPO, add_common_options, log
from .machine import machine
from .measure import (
    BASELINES,
    _check,
    _last_json,
    baseline_python,
    bench_baseline,
    clean_env,
    run_measured,
    run_pipeline,
)
from .report import f0, f2, median

MARKER = ".bench-writers.json"  # hidden: discovery skips it


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.writers", description=__doc__.splitlines()[0] if __doc__ else None
    )
    add_common_options(
        p,
        n=10_000,
        n_what="articles per writer",
        repeat=1,
        repeat_help="full loads and baseline runs per writer (medians)",
        seed_what="article",
        workers_default="the pipeline's",
    )
    p.add_argument("--flow", action="store_true", help="the writers' flow style instead of their block style")
    p.add_argument("--skip-dlt", action="store_true", help="skip the dlt baseline")
    p.add_argument("--before", help="also measure the answer rate of fast_yaml.py at this git revision")
    args = p.parse_args(argv)
    if args.n < 1 or args.repeat < 1:
        p.error("--n and --repeat must be positive")
    return args


def _writers_digest() -> str:
    from harness import writers as corpora

    h = hashlib.sha256()
    for path in (Path(corpora.__file__), corpora.NODE_DIR / "emit.mjs", corpora.NODE_DIR / "package-lock.json"):
        h.update(path.read_bytes())
    return h.hexdigest()


def ensure_corpora(out: Path, n: int, seed: int, flow: bool) -> tuple[Path, dict[str, list[str]]]:
    """OUT/writers-N-seedS-STYLE/WRITER/part-0000/doc-*.md, and each writer's frontmatter texts."""
    from harness import writers as corpora

    root = out / f"writers-{n}-seed{seed}-{'flow' if flow else 'block'}"
    want = {"n": n, "seed": seed, "flow": flow, "writers_sha256": _writers_digest(), "layout": 3}
    marker = root / MARKER
    texts_file = root / ".texts.json"
    if marker.exists() and texts_file.exists() and json.loads(marker.read_text()) == want:
        return root, json.loads(texts_file.read_text())
    shutil.rmtree(root, ignore_errors=True)
    log(f"writing {n} articles with each writer into {root}")
    docs = corpora.articles(n, seed)
    node = corpora.NodeWriters()
    texts: dict[str, list[str]] = {}
    try:
        for writer in corpora.WRITERS:
            texts[writer] = corpora.emit(writer, docs, flow, node)
    finally:
        node.close()
    # Only the articles every writer wrote as YAML that the strict loader accepts (ruamel.yaml's flow style,
    # for one, writes some plain scalars libyaml refuses) and python-frontmatter's YAML 1.1 loader reads (a
    # plain '<<' from a YAML 1.2 writer is a merge key there): the same documents for every writer and tool.
    keep = [
        i for i in range(n) if all(_valid(texts[w][i]) and _frontmatter_loads(texts[w][i]) for w in corpora.WRITERS)
    ]
    texts = {w: [t[i] for i in keep] for w, t in texts.items()}
    for writer in corpora.WRITERS:
        folder = root / writer
        for i, text in enumerate(texts[writer]):
            path = folder / f"part-{i // 10_000:04d}" / f"doc-{i:08d}.md"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(corpora.seed_file(text), encoding="utf-8")
    texts_file.write_text(json.dumps(texts))
    marker.write_text(json.dumps(want))
    return root, texts


def _valid(text: str) -> bool:
    try:
        load_strict(text)
    except ProblemError:
        return False
    return True


def _frontmatter_loads(text: str) -> bool:
    import yaml

    try:
        yaml.load(text, Loader=yaml.CSafeLoader)
    except (yaml.YAMLError, ValueError, TypeError):
        return False
    return True


def fast_yaml_at(rev: str) -> types.ModuleType:
    """``pipeline/read/fast_yaml.py`` as it was at REV, loaded as a separate module."""
    source = subprocess.run(
        ["git", "show", f"{rev}:pipeline/read/fast_yaml.py"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType(f"fast_yaml_at_{rev}")
    module.__file__ = f"{rev}:pipeline/read/fast_yaml.py"
    sys.modules[module.__name__] = module  # dataclasses and the like look their module up
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def answer_rate(texts: list[str], modules: dict[str, Any]) -> dict[str, Any]:
    """Per fast-path module: answered / valid documents (valid: the strict loader accepts them)."""
    valid = [text for text in texts if _valid(text)]
    out: dict[str, Any] = {"valid": len(valid), "documents": len(texts)}
    for name, module in modules.items():
        out[name] = sum(module.load_fast(text) is not None for text in valid)
    return out


# The pandas script as written does not survive the writers' files: pandas' inferred timestamp format refuses
# their mix of RFC 3339 forms (bare dates, fractional seconds), and YAML 1.1 typing (a title 'yes' is a bool,
# '123' an int) leaves columns pyarrow will not write. It runs unchanged here, with ISO 8601 parsing and
# such mixed object columns written as text.
_ADAPTED_SCRIPT = """
import runpy, sys
import pandas as pd
_to_datetime = pd.to_datetime
pd.to_datetime = lambda *a, **k: _to_datetime(*a, **{"format": "ISO8601", **k})
_to_parquet = pd.DataFrame.to_parquet
def _text(v):
    return v if v is None or isinstance(v, str) or v != v else str(v)
def to_parquet(self, *a, **k):
    for c in self.columns:
        if self[c].dtype == object:
            self[c] = self[c].map(_text)
    return _to_parquet(self, *a, **k)
pd.DataFrame.to_parquet = to_parquet
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def script_baseline(corpus: Path, work: Path, repeat: int, notes: list[str]) -> list[dict[str, Any]]:
    """bench/baselines/pandas_script.py on CORPUS, ``repeat`` times, adapted as ``_ADAPTED_SCRIPT`` says."""
    python = baseline_python("pandas", notes)
    script = str(BASELINES / "pandas_script.py")
    runs = []
    for k in range(repeat):
        dest = work / "baseline-pandas"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        cmd = [python, "-c", _ADAPTED_SCRIPT, script, str(corpus), str(dest)]
        m = run_measured(cmd, work / "logs" / f"pandas-{corpus.name}-{k}.log", clean_env(), dest)
        _check(m, "pandas baseline")
        out = _last_json(m.stdout)
        runs.append({"work_s": out["seconds"], "wall_s": m.wall_s, "docs": out["docs"], "versions": out["versions"]})
        shutil.rmtree(dest)
    return runs


def run(args: argparse.Namespace) -> dict[str, Any]:
    from harness import writers as corpora

    out: Path = args.out.resolve()
    style = "flow" if args.flow else "block"
    work = out / f"work-writers-{style}"
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    root, texts = ensure_corpora(out, args.n, args.seed, args.flow)
    modules: dict[str, Any] = {"after": fast_yaml}
    if args.before:
        modules["before"] = fast_yaml_at(args.before)
    results: dict[str, Any] = {
        "command": "python -m bench.writers " + shlex.join(sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "n": args.n,
        "style": style,
        "repeat": args.repeat,
        "before": args.before,
        "machine": machine(),
        "notes": [],
        "writers": {},
    }
    for writer in corpora.WRITERS:
        corpus = root / writer
        entry: dict[str, Any] = {"answers": answer_rate(texts[writer], modules)}
        log(f"{writer}: fast path {entry['answers']}")
        loads = []
        for k in range(args.repeat):
            warehouse = work / f"warehouse-{writer}-{k}"
            loads.append(run_pipeline(f"{writer}-full-{k}", corpus, warehouse, work / "logs", workers=args.workers))
            log(
                f"{writer}: full load {k + 1}/{args.repeat}: work {loads[-1].work_s:.2f} s, wall {loads[-1].wall_s:.2f} s"
            )
            shutil.rmtree(warehouse)
        entry["pipeline"] = {
            "work_s": median([r.work_s for r in loads]),
            "wall_s": median([r.wall_s for r in loads]),
            "files_parsed": loads[-1].files_parsed,
            "summary": loads[-1].summary,
        }
        entry["baselines"] = {}
        script = script_baseline(corpus, work, args.repeat, results["notes"])
        entry["baselines"]["pandas"] = {
            "work_s": median([r["work_s"] for r in script]),
            "wall_s": median([r["wall_s"] for r in script]),
            "docs": script[-1]["docs"],
            "versions": script[-1]["versions"],
        }
        if not args.skip_dlt:
            runs = bench_baseline("dlt", corpus, work, args.repeat, results["notes"])
            entry["baselines"]["dlt"] = {
                "work_s": median([b.inner_s for b in runs]),
                "wall_s": median([b.wall_s for b in runs]),
                "docs": runs[-1].docs,
                "versions": runs[-1].versions,
            }
        results["writers"][writer] = entry
    results["load_average_end"] = os.getloadavg()
    return results


def render(results: dict[str, Any]) -> str:
    n = results["n"]
    m = results["machine"]
    lines = [
        f"## Writers ({results['style']} style)",
        "",
        f"`{results['command']}`, {results['date']}; {n} articles per writer, the same articles for every "
        f"writer; medians of {results['repeat']} run(s). Machine: {m.get('cpu', '?')}, {m.get('usable_cores', '?')} usable cores; "
        f"load average at start {m.get('load_average_start', '?')}, at end {tuple(round(x, 2) for x in results['load_average_end'])}.",
        "",
    ]
    before = results["before"]
    header = ["writer", "fast path answers" + (f" (before: {before})" if before else ""), "pipeline work docs/s"]
    header += ["script docs/s", "pipeline ÷ script"]
    with_dlt = any("dlt" in e["baselines"] for e in results["writers"].values())
    if with_dlt:
        header += ["dlt docs/s", "pipeline ÷ dlt"]
    rows = []
    for writer, e in results["writers"].items():
        a = e["answers"]
        rate = f"{a['after'] / a['valid']:.1%}"
        if before:
            rate = f"{a['before'] / a['valid']:.1%} → {rate}"
        rate += f" of {a['valid']}"
        docs = e["pipeline"]["files_parsed"] or n
        p_rate = docs / e["pipeline"]["work_s"]
        script = e["baselines"]["pandas"]
        s_rate = script["docs"] / script["work_s"]
        row = [writer, rate, f0(p_rate), f0(s_rate), f2(p_rate / s_rate)]
        if with_dlt:
            d = e["baselines"].get("dlt")
            row += [f0(d["docs"] / d["work_s"]), f2(p_rate / (d["docs"] / d["work_s"]))] if d else ["skipped", ""]
        rows.append(row)
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += [
        "",
        "Answer rate: documents `fast_yaml.load_fast` answers among those the strict loader accepts. Pipeline "
        "work: `finished_at − started_at` of the full load's `load_runs` row; script and dlt: their own timers "
        "(imports excluded), same files, same run.",
    ]
    lines += [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    report = render(results)
    name = "writers" + ("-flow" if args.flow else "")
    out: Path = args.out.resolve()
    (out / f"{name}.md").write_text(report)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2, default=str))
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
