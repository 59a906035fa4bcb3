"""The benchmark, in one command: corpus, pipeline loads, Prefect start-up, baselines, BI queries.

    python -m bench.run --n 100000 --repeat 3 [--out bench/out] [--seed 7] [--skip-dlt] [--skip-pandas]
                        [--skip-prefect] [--query-n N] [--query-month 2023-06] [--workers N]

One invocation, in order:

1. the corpus: bench/generate.py's N documents for the seed, under OUT/corpus-N-seedS; reused when
   its marker matches N, the seed and the generator's source;
2. ``--repeat`` times, each in a fresh warehouse: the full load (``pipeline run --orchestrator none``),
   a no-op rerun, a rerun after rewriting 1% of the files (title and publishedDateTime; the
   files are restored afterwards), and a usual-day rerun (1% new articles and 0.5% retitled ones,
   all in the newest two months; removed and restored afterwards). Reported: medians of the pipeline's own work (``finished_at -
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

The work is split by job: bench/corpus.py (the corpus and the 1% rewrite), bench/measure.py (process
trees' time and memory, pipeline loads, Prefect, baselines), bench/queries.py (BI queries, row groups),
bench/machine.py (machine facts), bench/report.py (the report, one function per section),
harness/envs.py (the baselines' venv) and bench/common.py (REPO, log, the shared options). This module parses the
arguments and wires them together.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .common import add_common_options, log
from .corpus import change_sample, ensure_corpus, usual_day_plan
from .machine import machine
from .measure import bench_baseline, bench_pipeline, bench_prefect
from .queries import ensure_query_warehouse, month_range, row_group_pruning, time_queries
from .report import render, to_jsonable


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_options(
        p,
        n=100_000,
        n_what="documents in the corpus",
        repeat=3,
        repeat_help="runs per measurement; medians are reported (default 3)",
        workers_default="the pipeline's, CPU count",
    )
    p.add_argument("--skip-pandas", action="store_true", help="skip the pandas baseline")
    p.add_argument("--skip-dlt", action="store_true", help="skip the dlt baseline")
    p.add_argument("--skip-prefect", action="store_true", help="skip the Prefect start-up measurement")
    p.add_argument("--query-n", type=int, help="documents in the warehouse the BI queries run on (default: --n)")
    p.add_argument(
        "--report", default="report", help="name of the report files and work folder in --out (default report)"
    )
    p.add_argument("--query-month", default="2023-06", help="month of the date-range query (default 2023-06)")
    args = p.parse_args(argv)
    if args.n < 1 or args.repeat < 1 or (args.query_n is not None and args.query_n < 1):
        p.error("--n, --repeat and --query-n must be positive")
    try:
        month_range(args.query_month)
    except ValueError:
        p.error("--query-month must look like 2023-06")
    return args


def run_baselines(args: argparse.Namespace, corpus: Path, work: Path, results: dict[str, Any]) -> None:
    """The baselines not skipped, ``--repeat`` times each; their package versions for the Machine table."""
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


def run_queries(args: argparse.Namespace, out: Path, warehouse: Path) -> dict[str, Any]:
    """The BI queries over WAREHOUSE, or over a separately loaded one of ``--query-n`` documents."""
    query_n = args.query_n or args.n
    if query_n == args.n:
        query_wh, qmeta = warehouse, {"loaded_s": None}
    else:
        query_wh, qmeta = ensure_query_warehouse(out, query_n, args.seed, args.workers)
    log(f"BI queries over {query_wh}")
    return {
        "warehouse": str(query_wh),
        "n": query_n,
        "month": args.query_month,
        **qmeta,
        "timings": time_queries(query_wh, args.query_month),
        "pruning": row_group_pruning(query_wh, args.query_month),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    work = out / ("work" if args.report == "report" else f"work-{args.report}")
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
    day = usual_day_plan(corpus, args.n, args.seed)
    results["usual_day"] = {"months": list(day.months), "edited": list(day.edited), "new": day.new}
    log(f"corpus: {args.n} documents, {meta['bytes'] / 1e6:.1f} MB in {corpus}")

    results["pipeline"], warehouse = bench_pipeline(corpus, args.n, args.seed, day, work, args.repeat, args.workers)
    results["prefect"] = [] if args.skip_prefect else bench_prefect(corpus, work, args.workers)
    run_baselines(args, corpus, work, results)
    results["queries"] = run_queries(args, out, warehouse)
    results["load_average_end"] = os.getloadavg()

    report = render(results)
    (out / f"{args.report}.md").write_text(report)
    (out / f"{args.report}.json").write_text(json.dumps(to_jsonable(results), indent=2, default=str))
    print(report)
    log(f"wrote {out / (args.report + '.md')} and {out / (args.report + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
