"""Baseline: the straightforward python-frontmatter + pandas script a user would write.

Walks the seeds folder, ``frontmatter.load``s every file, builds one DataFrame per table with
``json_normalize``/``explode`` and writes one Parquet file per table. Deliberately plain: one
process, everything in memory, no incremental logic, no validation beyond what YAML and pandas do.

    python bench/baselines/pandas_script.py SEEDS_DIR OUT_DIR

Prints one JSON line: documents read, seconds of work (imports excluded), rows per table, versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Any

import frontmatter
import pandas as pd


def key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def read_folder(seeds: str) -> list[dict[str, Any]]:
    records = []
    for root, dirs, files in os.walk(seeds):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.endswith((".md", ".markdown", ".txt")):
                continue
            path = os.path.join(root, name)
            post = frontmatter.load(path)
            doc: dict[str, Any] = dict(post.metadata)
            doc["body"] = post.content or None
            doc["source_path"] = os.path.relpath(path, seeds)
            doc["article_id"] = key(doc.get("webUrl") or doc["originalUrl"])
            for rel in doc.get("related") or []:
                rel.setdefault("images", [])  # json_normalize needs the record path on every entry
            records.append(doc)
    return records


def build_tables(records: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    articles = pd.json_normalize(records, sep="_")
    lists = ["topics", "images", "related"]
    articles = articles.drop(columns=[c for c in lists if c in articles.columns])
    if "publishedDateTime" in articles.columns:
        articles["publishedDateTime"] = pd.to_datetime(articles["publishedDateTime"], utc=True)

    frame = pd.DataFrame(
        {"article_id": [r["article_id"] for r in records], "topics": [r.get("topics") for r in records]}
    )
    topics = frame.explode("topics").dropna(subset=["topics"]).rename(columns={"topics": "topic"})
    topics["position"] = topics.groupby("article_id").cumcount()

    with_images = [r for r in records if r.get("images")]
    images = pd.json_normalize(with_images, record_path="images", meta=["article_id"])
    if len(images):
        images["position"] = images.groupby("article_id").cumcount()

    with_related = [r for r in records if r.get("related")]
    related = pd.json_normalize(with_related, record_path="related", meta=["article_id"], sep="_")
    if len(related):
        related = related.drop(columns=["images"])
        related["position"] = related.groupby("article_id").cumcount()
        related["related_article_id"] = related["webUrl"].map(key)
        related["publishedDateTime"] = pd.to_datetime(related["publishedDateTime"], utc=True)

    related_images = pd.json_normalize(
        with_related, record_path=["related", "images"], meta=["article_id", ["related", "webUrl"]]
    )
    if len(related_images):
        related_images["position"] = related_images.groupby(["article_id", "related.webUrl"]).cumcount()

    return {
        "articles": articles,
        "topics": topics,
        "images": images,
        "related": related,
        "related_images": related_images,
    }


def main() -> None:
    seeds, out = sys.argv[1], sys.argv[2]
    t0 = time.perf_counter()
    records = read_folder(seeds)
    tables = build_tables(records)
    os.makedirs(out, exist_ok=True)
    for name, df in tables.items():
        df.to_parquet(os.path.join(out, f"{name}.parquet"), index=False)
    seconds = time.perf_counter() - t0
    import pyarrow

    result = {
        "tool": "pandas",
        "docs": len(records),
        "seconds": round(seconds, 3),
        "rows": {name: len(df) for name, df in tables.items()},
        "versions": {"pandas": pd.__version__, "pyarrow": pyarrow.__version__, "python-frontmatter": _version()},
    }
    print(json.dumps(result))


def _version() -> str:
    from importlib.metadata import version

    return version("python-frontmatter")


if __name__ == "__main__":
    main()
