"""Build the next snapshot: merge changed rows into month partitions, derive the small tables.

Cost follows the change: only months that gain or lose rows are rewritten (old
rows of replaced articles dropped, new rows merged in, sorted); every other file
is hard-linked from the previous snapshot. DuckDB does the merge and sort out of
core; pyarrow writes the files with the explicit schema from ``schema``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.warehouse import schema
from pipeline.warehouse.commits import Snapshot, link_or_copy

EMPTY_FILE = "empty.parquet"
DATA_FILE = "data.parquet"
ROW_GROUP_ROWS = 64 * 1024  # row groups: at most this many rows ...
ROW_GROUP_BYTES = 32 * 1024 * 1024  # ... or this many bytes in memory (articles carry bodies)
STREAM_ROWS = 8 * 1024  # rows per batch pulled from DuckDB: bounds memory while merging
MERGE_ARTICLES = 50_000  # articles (and their child rows) sorted per merge query
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "articles": ("published_at", "article_id"),
    "article_topics": ("article_id", "position"),
    "article_images": ("article_id", "position"),
    "related_articles": ("article_id", "position"),
    "related_article_images": ("article_id", "related_position", "position"),
}


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _files_sql(files: Iterable[str]) -> str:
    return "[" + ", ".join(_q(f) for f in files) + "]"


def connect(temp_dir: str, memory_limit: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute(f"SET temp_directory = {_q(temp_dir)}")
    con.execute(f"SET memory_limit = {_q(memory_limit)}")
    con.execute("SET preserve_insertion_order = true")
    return con


def write_table(path: str, table: schema.Table, data: pa.Table) -> None:
    pq.write_table(
        data.select(table.column_names).cast(table.arrow_schema()),
        path,
        compression="zstd",
        row_group_size=ROW_GROUP_ROWS,
    )


def month_groups(touched: set[str], articles_per_month: dict[str, int], budget: int) -> list[list[str]]:
    """Pack touched months into groups of at most ``budget`` articles (a bigger month stands alone).

    Each group is merged and sorted by one query, so sort memory follows the budget, not the corpus.
    """
    groups: list[list[str]] = []
    size = budget + 1
    for month in sorted(touched):
        n = articles_per_month.get(month, 0)
        if size + n > budget:
            groups.append([])
            size = 0
        groups[-1].append(month)
        size += n
    return groups


def merge_partitioned(
    con: duckdb.DuckDBPyConnection,
    table: schema.Table,
    previous: Snapshot | None,
    staging: list[str],
    groups: list[list[str]],
    out_dir: str,
) -> list[str]:
    """Write ``table`` into ``out_dir``: untouched months linked, each group of touched months merged.

    Expects temp tables ``dead(article_id)`` and ``losers(rel)`` on ``con``.
    """
    os.makedirs(out_dir, exist_ok=True)
    touched = {m for g in groups for m in g}
    names: list[str] = []
    old: dict[str, str] = {}
    for path in previous.table_files(table.name) if previous else []:
        month = os.path.basename(path)[: -len(".parquet")]
        if month == "empty":
            continue
        if month in touched:
            old[month] = path
        else:
            link_or_copy(path, os.path.join(out_dir, os.path.basename(path)))
            names.append(os.path.basename(path))
    cols = ", ".join(f'"{c}"' for c in table.column_names)
    order = ", ".join(f'"{k}"' for k in SORT_KEYS[table.name])
    for group in groups:
        parts = []
        old_files = [old[m] for m in group if m in old]
        if old_files:
            parts.append(
                f"SELECT {cols}, regexp_extract(filename, '([^/]+)\\.parquet$', 1) AS _month "
                f"FROM read_parquet({_files_sql(old_files)}, filename = true) "
                "WHERE article_id NOT IN (SELECT article_id FROM dead)"
            )
        if staging:
            months = ", ".join(_q(m) for m in group)
            parts.append(
                f"SELECT {cols}, _month FROM read_parquet({_files_sql(staging)}) "
                f"WHERE _month IN ({months}) AND _source NOT IN (SELECT rel FROM losers)"
            )
        if parts:
            sql = f"SELECT * FROM ({' UNION ALL '.join(parts)}) ORDER BY _month, {order}"
            names.extend(_stream_by_month(con.sql(sql).to_arrow_reader(STREAM_ROWS), table, out_dir))
    if not names:
        write_table(os.path.join(out_dir, EMPTY_FILE), table, table.arrow_schema().empty_table())
        names.append(EMPTY_FILE)
    return sorted(names)


class _MonthWriter:
    """Writes a sorted stream into one file per month, in row groups of bounded rows and bytes."""

    def __init__(self, table: schema.Table, out_dir: str) -> None:
        self.table = table
        self.target = table.arrow_schema()
        self.out_dir = out_dir
        self.names: list[str] = []
        self.month: str | None = None
        self.writer: pq.ParquetWriter | None = None
        self.buffer: list[pa.RecordBatch] = []
        self.rows = self.bytes = 0

    def add(self, month: str, part: pa.RecordBatch) -> None:
        if month != self.month:
            self.close()
            self.month = month
            self.names.append(f"{month}.parquet")
            path = os.path.join(self.out_dir, self.names[-1])
            self.writer = pq.ParquetWriter(path, self.target, compression="zstd")
        self.buffer.append(part)
        self.rows += part.num_rows
        self.bytes += part.nbytes
        if self.rows >= ROW_GROUP_ROWS or self.bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self.buffer and self.writer is not None:
            data = pa.Table.from_batches(self.buffer).select(self.table.column_names).cast(self.target)
            self.writer.write_table(data, row_group_size=max(self.rows, 1))
        self.buffer, self.rows, self.bytes = [], 0, 0

    def close(self) -> None:
        self._flush()
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _stream_by_month(reader: pa.RecordBatchReader, table: schema.Table, out_dir: str) -> list[str]:
    out = _MonthWriter(table, out_dir)
    try:
        for batch in reader:
            months = batch.column("_month")
            for month in pc.unique(months).to_pylist():
                out.add(month, batch.filter(pc.equal(months, month)))
    finally:
        out.close()
    return out.names


PROVIDERS_SQL = """
WITH mentions AS (
    SELECT provider_id, provider_domain, provider_name, 1 AS a, 0 AS r
    FROM read_parquet({articles}) WHERE provider_id IS NOT NULL
    UNION ALL
    SELECT provider_id, provider_domain, provider_name, 0 AS a, 1 AS r
    FROM read_parquet({related}) WHERE provider_id IS NOT NULL
), uses AS (
    SELECT provider_id, provider_name AS name, count(*) AS uses
    FROM mentions WHERE provider_name IS NOT NULL GROUP BY provider_id, provider_name
), names AS (
    SELECT provider_id, name,
           row_number() OVER (PARTITION BY provider_id ORDER BY uses DESC, name) AS rank
    FROM uses
)
SELECT m.provider_id,
       min(lower(trim(m.provider_domain))) AS domain,
       min(n.name) AS name,
       coalesce(list_sort(list_distinct(list(m.provider_name)
           FILTER (WHERE m.provider_name IS NOT NULL))), []) AS names,
       sum(m.a)::BIGINT AS article_count,
       sum(m.r)::BIGINT AS related_count
FROM mentions m LEFT JOIN names n ON n.provider_id = m.provider_id AND n.rank = 1
GROUP BY m.provider_id
ORDER BY m.provider_id
"""


def derive_providers(con: duckdb.DuckDBPyConnection, articles: list[str], related: list[str]) -> pa.Table:
    sql = PROVIDERS_SQL.format(articles=_files_sql(articles), related=_files_sql(related))
    return con.sql(sql).to_arrow_table()


def count_rows(files: list[str]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
