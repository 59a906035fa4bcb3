"""The benchmark corpus generator's command line; the generator itself is harness/generate.py.

python -m bench.generate OUT_DIR -n 100000 [--seed 7]
"""

from __future__ import annotations

import argparse

from harness import generate as generator


def main() -> None:
    parser = argparse.ArgumentParser(description=generator.__doc__.splitlines()[0] if generator.__doc__ else None)
    parser.add_argument("out")
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    size = generator.generate(args.out, args.n, args.seed)
    print(f"wrote {args.n} documents, {size / 1e6:.1f} MB, {size / max(args.n, 1):.0f} bytes/doc into {args.out}")


if __name__ == "__main__":
    main()
