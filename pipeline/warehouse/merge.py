"""Build the next snapshot's files: merge changed rows into month partitions, derive the small tables.

Cost follows the change: only months that gain or lose rows are rewritten (old rows of
replaced articles dropped, new rows merged in, sorted); every other file is referenced by
the new snapshot as it is. Each (table, group of months) is an independent ``MergeSpec``,
small and picklable, so merges run on threads locally or as tasks on a Dask cluster.
DuckDB does the merge and sort out of core; pyarrow writes the files with the explicit
schema from ``schema``.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import faults, schema
from pipeline.read.normalize import canonical_host
from pipeline.storage.location import Location
from pipeline.warehouse.commits import data_name, display_name
from pipeline.warehouse.sql import file_list, ident, literal

EMPTY_PART = "empty"  # a table with no rows at all is one empty file, so every reader sees its columns
SMALL_PART = "data"  # the small tables are one file each
ROW_GROUP_ROWS = 64 * 1024  # row groups: at most this many rows ...
ROW_GROUP_BYTES = 32 * 1024 * 1024  # ... or this many bytes in memory (articles carry bodies)
STREAM_ROWS = 8 * 1024  # rows per batch pulled from DuckDB: bounds memory while merging
MERGE_ARTICLES = 50_000  # articles (and their child rows) sorted per merge query; DuckDB spills beyond its budget


def part_of(rel: str) -> str:
    """Partition of a data file: ``data/articles/2023-10.<id>.parquet`` -> ``2023-10``."""
    return display_name(rel)[: -len(".parquet")]


def connect(wh: Location, memory_limit: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that can read the warehouse and spills to local disk."""
    con = duckdb.connect(":memory:")
    con.execute(f"SET temp_directory = {literal(tempfile.gettempdir())}")
    con.execute(f"SET memory_limit = {literal(memory_limit)}")
    con.execute("SET preserve_insertion_order = false")  # every query that needs an order says ORDER BY
    # Every merge of a build reads the footers of the same staging files: parse each once.
    con.execute("SET parquet_metadata_cache = true")
    wh.attach(con)
    return con


def write_table(wh: Location, rel: str, table: schema.Table, data: pa.Table) -> int:
    with wh.open_write(rel) as fh:
        pq.write_table(
            data.select(table.column_names).cast(table.arrow_schema()),
            fh,
            compression="zstd",
            row_group_size=ROW_GROUP_ROWS,
        )
    return int(data.num_rows)


def write_small(wh: Location, table: schema.Table, data: pa.Table, snapshot_id: str) -> tuple[str, int]:
    rel = data_name(table.name, SMALL_PART, snapshot_id)
    return rel, write_table(wh, rel, table, data)


def write_empty(wh: Location, table: schema.Table, snapshot_id: str) -> tuple[str, int]:
    rel = data_name(table.name, EMPTY_PART, snapshot_id)
    return rel, write_table(wh, rel, table, table.arrow_schema().empty_table())


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


@dataclass(frozen=True)
class MergeSpec:
    """One table's rows for a group of months: previous files, staged rows, and what to drop."""

    table: str
    months: tuple[str, ...]
    old_files: tuple[str, ...]  # URLs of the previous snapshot's files for these months
    staging: tuple[str, ...]  # URLs of this run's staging files (rows of every month)
    dead: str  # URL of a Parquet file: article_id of rows replaced or removed
    losers: str  # URL of a Parquet file: rel of parsed files whose rows must not be merged
    warehouse: Location
    snapshot_id: str
    memory_limit: str


def merge_group(spec: MergeSpec, shared: duckdb.DuckDBPyConnection | None = None) -> list[tuple[str, int]]:
    """Write one month file per non-empty month of the group; (relative path, rows) each.

    ``shared``: a DuckDB database the build's merges share (a cursor of it is used), so that
    the staging files' metadata is read once per build and the memory budget is one for all.
    """
    table = schema.table(spec.table)
    cols = ", ".join(ident(c) for c in table.column_names)
    order = ", ".join(ident(k) for k in table.sort_key)
    parts = []
    if spec.old_files:
        parts.append(
            f"SELECT {cols}, regexp_extract(filename, '([^/.]+)\\.[^/]*\\.parquet$', 1) AS _month "
            f"FROM read_parquet({file_list(spec.old_files)}, filename = true) "
            f"WHERE article_id NOT IN (SELECT article_id FROM read_parquet({literal(spec.dead)}))"
        )
    if spec.staging:
        months = ", ".join(literal(m) for m in spec.months)
        # The range lets row-group statistics skip other months' rows (one row group per month).
        span = f"_month BETWEEN {literal(min(spec.months))} AND {literal(max(spec.months))}"
        parts.append(
            f"SELECT {cols}, _month FROM read_parquet({file_list(spec.staging)}) "
            f"WHERE {span} AND _month IN ({months}) "
            f"AND _source NOT IN (SELECT rel FROM read_parquet({literal(spec.losers)}))"
        )
    if not parts:
        return []
    con = shared.cursor() if shared is not None else connect(spec.warehouse, spec.memory_limit)
    try:
        sql = f"SELECT * FROM ({' UNION ALL '.join(parts)}) ORDER BY _month, {order}"
        reader = con.sql(sql).to_arrow_reader(STREAM_ROWS)
        written = _stream_by_month(reader, table, spec.warehouse, spec.snapshot_id)
        faults.kill_at("in_merge")
        return written
    finally:
        con.close()


def merge_groups(specs: list[MergeSpec], threads: int) -> list[list[tuple[str, int]]]:
    """Every merge of a build, on ``threads`` threads sharing one DuckDB database (one memory budget;
    the staging files' metadata read once); results in the order of ``specs``.

    Arrow allocates through malloc here, as in the run's own process (``stages.use_system_allocator``):
    the writers' batches come and go, and malloc hands large freed blocks back at once.
    """
    if not specs:
        return []
    pa.set_memory_pool(pa.system_memory_pool())
    shared = connect(specs[0].warehouse, specs[0].memory_limit)
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(lambda spec: merge_group(spec, shared), specs))
    finally:
        shared.close()


class _MonthWriter:
    """Writes a sorted stream into one file per month, in row groups of bounded rows and bytes."""

    def __init__(self, table: schema.Table, wh: Location, snapshot_id: str) -> None:
        self.table = table
        self.target = table.arrow_schema()
        self.wh = wh
        self.snapshot_id = snapshot_id
        self.written: list[tuple[str, int]] = []
        self.month: str | None = None
        self.fh: object | None = None
        self.writer: pq.ParquetWriter | None = None
        self.buffer: list[pa.RecordBatch] = []
        self.rows = self.bytes = self.total = 0

    def add(self, month: str, part: pa.RecordBatch) -> None:
        if month != self.month:
            self.close()
            self.month = month
            rel = data_name(self.table.name, month, self.snapshot_id)
            self.written.append((rel, 0))
            self.fh = self.wh.open_write(rel)
            self.writer = pq.ParquetWriter(self.fh, self.target, compression="zstd")
        self.buffer.append(part)
        self.rows += part.num_rows
        self.bytes += part.nbytes
        if self.rows >= ROW_GROUP_ROWS or self.bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self.buffer and self.writer is not None:
            data = pa.Table.from_batches(self.buffer).select(self.table.column_names).cast(self.target)
            self.writer.write_table(data, row_group_size=max(self.rows, 1))
            self.total += data.num_rows
        self.buffer, self.rows, self.bytes = [], 0, 0

    def close(self) -> None:
        self._flush()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.fh.close()  # type: ignore[union-attr]
            self.written[-1] = (self.written[-1][0], self.total)
            self.total = 0


def _stream_by_month(
    reader: pa.RecordBatchReader, table: schema.Table, wh: Location, sid: str
) -> list[tuple[str, int]]:
    out = _MonthWriter(table, wh, sid)
    try:
        for batch in reader:
            months = batch.column("_month")
            for month in pc.unique(months).to_pylist():
                out.add(month, batch.filter(pc.equal(months, month)))
    finally:
        out.close()
    return out.written


# The providers table is derived in two steps, so that its input can be read in parts (the months a
# run keeps while its merges run, then the months it wrote): mentions, grouped by provider id, domain
# and name with the article and related-article uses of each group; then the providers from the
# union of such groups. Grouping is exact here: uses, counts, the smallest domain and the set of
# names are the same whether counted from the rows or from the groups.
MENTIONS_SQL = """
SELECT provider_id, provider_domain, provider_name, sum(a)::BIGINT AS a, sum(r)::BIGINT AS r
FROM ({mentions})
GROUP BY provider_id, provider_domain, provider_name
"""
MENTIONS_PART = """
SELECT provider_id, provider_domain, provider_name, {a} AS a, {r} AS r
FROM read_parquet({files}) WHERE provider_id IS NOT NULL
"""
NO_MENTIONS = """
SELECT NULL::VARCHAR AS provider_id, NULL::VARCHAR AS provider_domain, NULL::VARCHAR AS provider_name,
       0 AS a, 0 AS r
WHERE false
"""
PROVIDERS_SQL = """
WITH uses AS (
    SELECT provider_id, provider_name AS name, sum(a + r) AS uses
    FROM mentions WHERE provider_name IS NOT NULL GROUP BY provider_id, provider_name
), names AS (
    SELECT provider_id, name,
           row_number() OVER (PARTITION BY provider_id ORDER BY uses DESC, name) AS rank
    FROM uses
)
SELECT m.provider_id,
       min(m.provider_domain) AS domain,
       min(n.name) AS name,
       coalesce(list_sort(list_distinct(list(m.provider_name)
           FILTER (WHERE m.provider_name IS NOT NULL))), []) AS names,
       sum(m.a)::BIGINT AS article_count,
       sum(m.r)::BIGINT AS related_count
FROM mentions m LEFT JOIN names n ON n.provider_id = m.provider_id AND n.rank = 1
GROUP BY m.provider_id
ORDER BY m.provider_id
"""


def mentions(con: duckdb.DuckDBPyConnection, articles: list[str], related: list[str]) -> pa.Table:
    """Provider mentions in these article and related-article files, grouped (see ``MENTIONS_SQL``)."""
    parts = [MENTIONS_PART.format(files=file_list(articles), a=1, r=0)] if articles else []
    parts += [MENTIONS_PART.format(files=file_list(related), a=0, r=1)] if related else []
    sql = MENTIONS_SQL.format(mentions=" UNION ALL ".join(parts) or NO_MENTIONS)
    return con.sql(sql).to_arrow_table()


def providers_of(con: duckdb.DuckDBPyConnection, parts: list[pa.Table]) -> pa.Table:
    """One row per provider id from grouped mentions of disjoint sets of files; ``domain`` in the
    canonical form its id is the hash of."""
    con.register("mentions", pa.concat_tables(parts))
    try:
        table = con.sql(PROVIDERS_SQL).to_arrow_table()
    finally:
        con.unregister("mentions")
    canonical = pa.array([canonical_host(d) for d in table.column("domain").to_pylist()], pa.string())
    return table.set_column(table.column_names.index("domain"), "domain", canonical)


def derive_providers(con: duckdb.DuckDBPyConnection, articles: list[str], related: list[str]) -> pa.Table:
    """One row per provider id of these files."""
    return providers_of(con, [mentions(con, articles, related)])
