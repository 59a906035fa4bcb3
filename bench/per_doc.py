"""Per-document cost of each read step on one core: strict and fast YAML, interpreted and compiled contract.

    .venv/bin/python -m bench.per_doc --n 10000 --repeat 5

Documents come from the benchmark generator (same as bench.run's corpus), held in memory, so the
figures are CPU only. Each figure is the median of ``--repeat`` passes over all documents.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from harness import generate
from pipeline.read import extract as ex
from pipeline.read import fast_yaml
from pipeline.read.contract import check_document
from pipeline.read.normalize import Source, normalize
from pipeline.read.strict_yaml import load_strict


def _median_us(fn: Callable[[Any], object], items: list[Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / len(items) * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.per_doc", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="generated documents (default 10000)")
    p.add_argument("--repeat", type=int, default=5, help="passes; medians are reported (default 5)")
    args = p.parse_args(argv)
    datas = [generate.document(i, args.n, 7).encode() for i in range(args.n)]
    texts = [ex.decode(d) for d in datas]
    fms = [t[4:].split("\n---", 1)[0] + "\n" for t in texts]
    metas = [load_strict(fm) for fm in fms]
    checked = [check_document(m) for m in metas]
    sources = [Source(f"doc-{i}.md", ex.sha256(d)) for i, d in enumerate(datas)]
    answered = sum(fast_yaml.load_fast(fm) is not None for fm in fms)

    def extract_strict(i: int) -> object:
        return ex.extract(datas[i], sources[i], "bench", fast=False)

    def extract_fast(i: int) -> object:
        return ex.extract(datas[i], sources[i], "bench", fast=fast_yaml.available())

    rows: list[tuple[str, float]] = [
        ("YAML: strict loader (libyaml)", _median_us(load_strict, fms, args.repeat)),
        ("YAML: fast path, libyaml events in C", _median_us(fast_yaml.load_events, fms, args.repeat)),
        ("YAML: fast path, rapidyaml (fallback)", _median_us(fast_yaml.load_rapidyaml, fms, args.repeat)),
        ("contract: interpreted", _median_us(lambda m: check_document(m, compiled=False), metas, args.repeat)),
        ("contract: compiled", _median_us(check_document, metas, args.repeat)),
        (
            "normalize (rows)",
            _median_us(lambda i: normalize(checked[i], "", sources[i], "bench"), range(args.n), args.repeat),
        ),
    ]
    rows.append(("extract(), strict YAML", _median_us(extract_strict, list(range(args.n)), args.repeat)))
    rows.append(
        ("extract(), fast path (as in parser processes)", _median_us(extract_fast, list(range(args.n)), args.repeat))
    )
    print(
        f"{args.n} generated documents, one core, median of {args.repeat} passes; "
        f"fast path answered {answered}/{args.n}\n"
    )
    print("| step | µs/doc | docs/s |\n|---|---:|---:|")
    for name, us in rows:
        print(f"| {name} | {us:.0f} | {1e6 / us:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
