"""What every bench module shares: the repository root, the progress log (stderr) and the common options."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def add_common_options(
    p: argparse.ArgumentParser,
    *,
    n: int,
    n_what: str,
    repeat: int,
    repeat_help: str,
    seed_what: str = "corpus",
    workers_default: str | None = None,
) -> None:
    """The options the bench commands share: --n, --repeat, --seed, --out and (with ``workers_default``,
    the help's words for the default) --workers."""
    p.add_argument("--n", type=int, default=n, help=f"{n_what} (default {n})")
    p.add_argument("--repeat", type=int, default=repeat, help=repeat_help)
    p.add_argument("--seed", type=int, default=7, help=f"{seed_what} seed (default 7)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="output folder (default bench/out)")
    if workers_default is not None:
        p.add_argument("--workers", type=int, help=f"pipeline parser processes (default: {workers_default})")
