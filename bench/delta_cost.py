"""What the Delta Lake publish costs a run: seconds, log bytes per commit, share of the run's work.

    python -m bench.delta_cost --n 100000 --repeat 3 [--out bench/out] [--seed 7]

On bench/generate.py's corpus (reused from bench.run when it is there), ``--repeat`` times in a
fresh warehouse: a full load and a no-op rerun (``pipeline run --orchestrator none --format json``).
From each run's own summary: ``delta_seconds`` (bringing every table's Delta log to the new
version: footers read, actions written), the run's stage seconds (plan to publish), and the bytes
of the Delta log entries that run wrote. Medians. Writes OUT/delta-cost-N.md (and .json) and prints it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from .common import REPO, log
from .corpus import ensure_corpus


def _run(corpus: Path, warehouse: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--seeds", str(corpus), "--warehouse", str(warehouse),
         "--orchestrator", "none", "--quiet", "--format", "json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    summary: dict[str, Any] = json.loads(proc.stdout)
    return summary


def _log_bytes(warehouse: Path) -> dict[Path, int]:
    return {p: p.stat().st_size for p in warehouse.glob("data/*/_delta_log/*") if p.is_file()}


def measure(corpus: Path, warehouse: Path) -> dict[str, dict[str, float]]:
    """One full load and one no-op rerun in a fresh warehouse."""
    shutil.rmtree(warehouse, ignore_errors=True)
    out = {}
    for name in ("full", "noop"):
        before = _log_bytes(warehouse)
        summary = _run(corpus, warehouse)
        after = _log_bytes(warehouse)
        written = sum(size for path, size in after.items() if before.get(path) != size)
        work = sum(summary["seconds"].values())
        out[name] = {
            "delta_seconds": float(summary["delta_seconds"]),
            "work_seconds": work,
            "share": float(summary["delta_seconds"]) / work,
            "delta_commits": float(len(summary["delta_commits"])),
            "log_bytes": float(written),
            "log_bytes_per_commit": written / max(1, len(summary["delta_commits"])),
        }
    return out


def render(n: int, runs: list[dict[str, dict[str, float]]]) -> str:
    lines = [
        f"Delta publish cost, {n:,} documents, median of {len(runs)} (fresh warehouse each):",
        "",
        "| run | Delta seconds | run's work (plan to publish) | share | Delta commits | log bytes | per commit |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("full", "noop"):
        m = {k: statistics.median(r[name][k] for r in runs) for k in runs[0][name]}
        lines.append(
            f"| {'full load' if name == 'full' else 'no-op rerun'} | {m['delta_seconds']:.3f} | "
            f"{m['work_seconds']:.2f} s | {100 * m['share']:.2f}% | {m['delta_commits']:.0f} | "
            f"{m['log_bytes']:,.0f} | {m['log_bytes_per_commit']:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.delta_cost", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    corpus, _ = ensure_corpus(args.out, args.n, args.seed)
    runs = []
    for i in range(args.repeat):
        log(f"delta cost: run {i + 1}/{args.repeat}")
        runs.append(measure(corpus, args.out / "delta-cost-warehouse"))
    text = render(args.n, runs)
    (args.out / f"delta-cost-{args.n}.md").write_text(text + "\n")
    (args.out / f"delta-cost-{args.n}.json").write_text(json.dumps(runs, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
