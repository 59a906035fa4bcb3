"""Baseline: the same documents normalized by dlt into Parquet on the local filesystem destination.

python-frontmatter loads each file into a dict (metadata plus ``body``); dlt infers the schema,
unnests lists into child tables (``articles__topics``, ``articles__images``, ``articles__related``,
``articles__related__images``) and writes Parquet with its defaults (no tuning), as a user
following dlt's documentation would.

    python bench/baselines/dlt_pipeline.py SEEDS_DIR OUT_DIR

OUT_DIR/data holds the dataset, OUT_DIR/.dlt-pipelines dlt's working state. Telemetry is off
(no network here). Prints one JSON line like the pandas baseline.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

import dlt  # noqa: E402
import frontmatter  # noqa: E402

TABLES = {
    "articles": "articles",
    "topics": "articles__topics",
    "images": "articles__images",
    "related": "articles__related",
    "related_images": "articles__related__images",
}


def documents(seeds: str) -> Iterator[dict[str, Any]]:
    for root, dirs, files in os.walk(seeds):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.endswith((".md", ".markdown", ".txt")):
                continue
            path = os.path.join(root, name)
            post = frontmatter.load(path)
            doc = dict(post.metadata)
            doc["body"] = post.content or None
            doc["source_path"] = os.path.relpath(path, seeds)
            yield doc


def main() -> None:
    seeds, out = sys.argv[1], os.path.abspath(sys.argv[2])
    t0 = time.perf_counter()
    pipeline = dlt.pipeline(
        pipeline_name="seed_bench",
        pipelines_dir=os.path.join(out, ".dlt-pipelines"),
        destination=dlt.destinations.filesystem(bucket_url=Path(out, "data").as_uri()),
        dataset_name="seeds",
    )
    resource = dlt.resource(documents(seeds), name="articles", write_disposition="replace")
    pipeline.run(resource, loader_file_format="parquet")
    seconds = time.perf_counter() - t0
    trace = pipeline.last_trace
    counts = dict(trace.last_normalize_info.row_counts) if trace and trace.last_normalize_info else {}
    from importlib.metadata import version

    result = {
        "tool": "dlt",
        "docs": counts.get("articles", 0),
        "seconds": round(seconds, 3),
        "rows": {name: counts.get(table, 0) for name, table in TABLES.items()},
        "versions": {
            "dlt": version("dlt"),
            "pyarrow": version("pyarrow"),
            "python-frontmatter": version("python-frontmatter"),
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
