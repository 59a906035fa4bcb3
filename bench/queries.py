"""BI-style queries with DuckDB over a warehouse's catalog, and the Parquet row groups a one-month
range query has to read against the total (by min/max statistics, and as EXPLAIN ANALYZE counts).
"""

from __future__ import annotations

import glob
import json
import shutil
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from .common import log
from .corpus import ensure_corpus
from .measure import run_pipeline


def month_range(month: str) -> tuple[datetime, datetime]:
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def queries(month: str) -> list[tuple[str, str]]:
    # The catalog's timestamps are UTC wall time (plain TIMESTAMP): a naive literal keeps the filter in the
    # Parquet scan (row groups pruned); a TIMESTAMPTZ literal would cast the column and scan everything.
    start, end = (f"TIMESTAMP '{d:%Y-%m-%d %H:%M:%S}'" for d in month_range(month))
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
