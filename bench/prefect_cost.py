"""What Prefect costs a run: the same corpus without Prefect, with its temporary server, with a server
started beforehand, and with the default (the long-lived local server that `pipeline run` starts).

    python -m bench.prefect_cost --n 20000 --repeat 3 [--out bench/out] [--workers N]

Each configuration: a full load into a fresh warehouse, then a no-op rerun, ``--repeat`` times;
medians of whole-process wall time and pipeline work (the run's ``load_runs`` row). Then the 15
shipped seeds with the default: the first run on a fresh machine (it starts the local server) and
the second (it reuses it). Writes OUT/prefect-cost.md and OUT/prefect-cost.json. Every server it
starts listens on 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.common import REPO, log
from bench.corpus import ensure_corpus
from bench.machine import machine
from bench.measure import clean_env, run_pipeline
from harness.prefect_server import PrefectServer

CONFIGS = ("none", "temporary server", "server started beforehand", "default (local server)")


def _env(config: str, home: Path, api: str) -> tuple[str, dict[str, str]]:
    """(orchestrator, environment) of a configuration."""
    server_home = str(home / "local-server")
    if config == "none":
        return "none", clean_env()
    if config == "temporary server":
        return "prefect", clean_env(PIPELINE_LOCAL_SERVER="0", PREFECT_HOME=str(home / "temporary"))
    if config == "server started beforehand":
        return "prefect", clean_env(PREFECT_API_URL=api, PREFECT_HOME=str(home / "client"))
    return "prefect", clean_env(PIPELINE_SERVER_HOME=server_home, PREFECT_HOME=str(home / "client"))


def _row(runs: list[Any]) -> dict[str, float]:
    return {
        "wall_s": statistics.median(r.wall_s for r in runs),
        "work_s": statistics.median(r.work_s for r in runs),
        "min_wall_s": min(r.wall_s for r in runs),
        "max_wall_s": max(r.wall_s for r in runs),
    }


def _stop_local(home: Path) -> None:
    from pipeline.orchestration import server

    server.stop(home / "local-server")


def measure(corpus: Path, work: Path, repeat: int, workers: int | None) -> dict[str, Any]:
    home = work / "homes"
    results: dict[str, Any] = {"full": {}, "noop": {}}
    with PrefectServer() as beforehand:
        # The default's server is started once beforehand too: these rows are a second (and later) run.
        from pipeline.orchestration import server

        (home / "local-server").mkdir(parents=True, exist_ok=True)
        server.start(home / "local-server")
        try:
            for config in CONFIGS:
                orchestrator, env = _env(config, home, beforehand.api_url)
                full, noop = [], []
                for i in range(repeat):
                    warehouse = work / f"wh-{CONFIGS.index(config)}-{i}"
                    shutil.rmtree(warehouse, ignore_errors=True)
                    warehouse.mkdir(parents=True)
                    warehouse = warehouse / "warehouse"
                    full.append(run_pipeline(f"{config} full {i}", corpus, warehouse, work / "logs",
                                             orchestrator, workers, env))  # fmt: skip
                    noop.append(run_pipeline(f"{config} noop {i}", corpus, warehouse, work / "logs",
                                             orchestrator, workers, env))  # fmt: skip
                    log(f"{config}: full {full[-1].wall_s:.2f} s (work {full[-1].work_s:.2f}), "
                        f"no-op {noop[-1].wall_s:.2f} s (work {noop[-1].work_s:.2f})")  # fmt: skip
                    shutil.rmtree(warehouse.parent)
                results["full"][config] = _row(full)
                results["noop"][config] = _row(noop)
        finally:
            _stop_local(home)
    results["seeds"] = measure_seeds(work, workers)
    return results


def measure_seeds(work: Path, workers: int | None) -> dict[str, float]:
    """The 15 shipped seeds with the default: first run on a fresh machine, then the second run."""
    home = work / "seeds-homes"
    shutil.rmtree(home, ignore_errors=True)
    seeds = Path(tempfile.mkdtemp(prefix="bench-seeds-")) / "seeds"
    shutil.copytree(REPO / "seeds", seeds)
    _, env = _env("default (local server)", home, "")
    try:
        first = run_pipeline("seeds first", seeds, seeds.parent / "w", work / "logs", "prefect", workers, env)
        second = run_pipeline("seeds second", seeds, seeds.parent / "w", work / "logs", "prefect", workers, env)
    finally:
        _stop_local(home)
        shutil.rmtree(seeds.parent, ignore_errors=True)
    log(f"seeds: first run {first.wall_s:.2f} s, second {second.wall_s:.2f} s")
    return {"first_wall_s": first.wall_s, "first_work_s": first.work_s,
            "second_wall_s": second.wall_s, "second_work_s": second.work_s}  # fmt: skip


def render(results: dict[str, Any], n: int, repeat: int, facts: dict[str, Any]) -> str:
    none_work = results["full"]["none"]["work_s"]
    lines = [
        f"# What Prefect costs a run ({n:,} documents, medians of {repeat})",
        "",
        f"Machine: {facts.get('cpu')}, {facts.get('usable_cores')} usable cores; load average at start "
        f"{', '.join(f'{x:.2f}' for x in facts.get('load_average_start', ()))}, at end "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}; Prefect {facts.get('versions', {}).get('prefect', '?')}; "
        f"commit {facts.get('commit')}.",
        "",
        "| | full load wall (s) | full load pipeline work (s) | work vs none | no-op rerun wall (s) | no-op work (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for config in CONFIGS:
        full, noop = results["full"][config], results["noop"][config]
        extra = full["work_s"] / none_work - 1 if none_work else 0.0
        lines.append(
            f"| {config} | {full['wall_s']:.1f} | {full['work_s']:.1f} | {extra:+.0%} | "
            f"{noop['wall_s']:.1f} | {noop['work_s']:.2f} |"
        )
    s = results["seeds"]
    lines += [
        "",
        f"The 15 shipped seeds with the default: first run on a fresh machine {s['first_wall_s']:.1f} s "
        f"(it starts the local server), second run {s['second_wall_s']:.1f} s "
        f"(pipeline work {s['second_work_s']:.2f} s).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.prefect_cost", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workers", type=int)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    corpus, _ = ensure_corpus(args.out, args.n, args.seed)
    work = args.out / "work-prefect-cost"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    facts = machine()
    results = measure(corpus, work, args.repeat, args.workers)
    (args.out / "prefect-cost.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    report = render(results, args.n, args.repeat, facts)
    (args.out / "prefect-cost.md").write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
