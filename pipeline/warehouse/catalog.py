"""The DuckDB catalog: one view per table over a snapshot's Parquet files.

Views name absolute file paths, so the catalog works from any working
directory and any process. The file is always built beside the target and
renamed over it, so a BI tool holding the old file open read-only never blocks
a run and keeps its old (complete) snapshot until it reconnects. After moving
the warehouse folder, `pipeline catalog` rebuilds it (`pipeline query` never
needs that: it builds its views in memory from `current`).
"""

from __future__ import annotations

import os

import duckdb

from pipeline.warehouse import schema
from pipeline.warehouse.commits import CATALOG, Snapshot, _fsync_dir


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_sql(table: schema.Table, files: list[str]) -> str:
    """CREATE VIEW statement for one table, columns in schema order."""
    cols = ", ".join(f'"{c.name}"' for c in table.columns)
    file_list = "[" + ", ".join(_quote(f) for f in files) + "]"
    return (
        f'CREATE OR REPLACE VIEW "{table.name}" AS SELECT {cols} '
        f"FROM read_parquet({file_list}, hive_partitioning = false)"
    )


def comment_sql(table: schema.Table) -> list[str]:
    text = f"{table.description} Grain: {table.grain}. Key: {', '.join(table.key)}."
    statements = [f'COMMENT ON VIEW "{table.name}" IS {_quote(text)}']
    for col in table.columns:
        statements.append(f'COMMENT ON COLUMN "{table.name}"."{col.name}" IS {_quote(col.description)}')
    return statements


def define_views(con: duckdb.DuckDBPyConnection, snap: Snapshot, comments: bool = True) -> None:
    for table in schema.TABLES:
        con.execute(view_sql(table, snap.table_files(table.name)))
        if comments:
            for stmt in comment_sql(table):
                con.execute(stmt)
    for view in schema.VIEWS:
        con.execute(f'CREATE OR REPLACE VIEW "{view.name}" AS {view.sql}')
        if comments:
            text = f"{view.description} Grain: {view.grain}."
            con.execute(f'COMMENT ON VIEW "{view.name}" IS {_quote(text)}')
    con.execute(
        "CREATE OR REPLACE VIEW pipeline_snapshot AS SELECT "
        f"{_quote(snap.id)} AS snapshot_id, {_quote(snap.meta['run_id'])} AS run_id, "
        f"{_quote(snap.path)} AS snapshot_path"
    )


def build_catalog(warehouse: str, snap: Snapshot, build_dir: str) -> str:
    """Write a fresh catalog in ``build_dir`` and rename it over warehouse/catalog.duckdb."""
    tmp = os.path.join(build_dir, CATALOG)
    if os.path.exists(tmp):
        os.unlink(tmp)
    # Written in the v1.4 storage format: the catalog holds only views, and BI tools that
    # bundle DuckDB 1.4/1.5 can then open it too (a 2.0-format file refuses them).
    con = duckdb.connect(tmp, config={"storage_compatibility_version": "v1.4.0"})
    try:
        define_views(con, snap)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    target = os.path.join(warehouse, CATALOG)
    os.replace(tmp, target)
    _fsync_dir(warehouse)
    return target


def catalog_snapshot_id(warehouse: str) -> str | None:
    """Which snapshot the catalog file shows (None when missing or unreadable)."""
    path = os.path.join(warehouse, CATALOG)
    if not os.path.exists(path):
        return None
    try:
        con = duckdb.connect(path, read_only=True)
    except duckdb.Error:
        return None
    try:
        row = con.execute("SELECT snapshot_id, snapshot_path FROM pipeline_snapshot").fetchone()
    except duckdb.Error:
        return None
    finally:
        con.close()
    if row is None or not os.path.isdir(str(row[1])):
        return None  # moved or deleted: rebuild
    return str(row[0])


def memory_connection(snap: Snapshot) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the same views; for read-only CLI queries."""
    con = duckdb.connect(":memory:")
    define_views(con, snap, comments=False)
    return con
