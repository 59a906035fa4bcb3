"""The DuckDB catalog: one view per table over a snapshot's Parquet files (local paths or s3:// URLs).

Views name absolute paths or URLs, so the catalog works from any working directory
and any process. The file is always built in a scratch folder and then replaced whole
(a rename locally, one PUT on object storage), so a BI tool holding the old file open
never blocks a run and keeps its old (complete) snapshot until it reconnects.
Timestamps come out of the views as plain TIMESTAMPs holding UTC, so every client, in any time
zone, groups and filters by the same UTC days as `pipeline query` (which uses the same views).
"""

from __future__ import annotations

import duckdb

from pipeline import schema
from pipeline.storage.location import Location
from pipeline.warehouse import commits
from pipeline.warehouse.commits import CATALOG, Snapshot
from pipeline.warehouse.sql import file_list, ident, literal


def _select(col: schema.Column) -> str:
    """A column as the view hands it out: timestamps as UTC wall time (schema.UTC_TIMESTAMP_SQL)."""
    if col.type == "timestamp":
        return f"{schema.UTC_TIMESTAMP_SQL.format(ident(col.name))} AS {ident(col.name)}"
    return ident(col.name)


def view_sql(table: schema.Table, files: list[str]) -> str:
    """CREATE VIEW statement for one table, columns in schema order.

    Timestamp columns become plain TIMESTAMPs holding UTC (the files keep TIMESTAMP WITH TIME ZONE):
    DuckDB would otherwise truncate, cast and compare them in the reader's machine time zone, and a
    BI tool cannot be asked to know that (issue 20).
    """
    cols = ", ".join(_select(c) for c in table.columns)
    return (
        f"CREATE OR REPLACE VIEW {ident(table.name)} AS SELECT {cols} "
        f"FROM read_parquet({file_list(files)}, hive_partitioning = false)"
    )


def comment_sql(table: schema.Table) -> list[str]:
    text = f"{table.description} Grain: {table.grain}. Key: {', '.join(table.key)}."
    statements = [f"COMMENT ON VIEW {ident(table.name)} IS {literal(text)}"]
    for col in table.columns:
        statements.append(f"COMMENT ON COLUMN {ident(table.name)}.{ident(col.name)} IS {literal(col.description)}")
    return statements


def define_views(con: duckdb.DuckDBPyConnection, snap: Snapshot, comments: bool = True) -> None:
    for table in schema.TABLES:
        con.execute(view_sql(table, snap.table_files(table.name)))
        if comments:
            for stmt in comment_sql(table):
                con.execute(stmt)
    for view in schema.VIEWS:
        con.execute(f"CREATE OR REPLACE VIEW {ident(view.name)} AS {view.sql}")
        if comments:
            text = f"{view.description} Grain: {view.grain}."
            con.execute(f"COMMENT ON VIEW {ident(view.name)} IS {literal(text)}")
    con.execute(
        "CREATE OR REPLACE VIEW pipeline_snapshot AS SELECT "
        f"{literal(snap.id)} AS snapshot_id, {snap.version}::BIGINT AS version, "
        f"{literal(str(snap.meta.get('run_id', snap.id)))} AS run_id, {literal(snap.warehouse.url)} AS warehouse"
    )


def build_catalog(wh: Location, snap: Snapshot, scratch: Location) -> str:
    """Write a fresh catalog in ``scratch`` and replace ``<warehouse>/catalog.duckdb`` with it."""
    tmp = scratch.fresh_path(CATALOG)
    # Written in the v1.4 storage format: the catalog holds only views, and BI tools that
    # bundle DuckDB 1.4/1.5 can then open it too (a 2.0-format file refuses them).
    con = duckdb.connect(tmp, config={"storage_compatibility_version": "v1.4.0"})
    try:
        wh.attach(con)  # views read each file's schema when created
        define_views(con, snap)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    wh.put_file(tmp, CATALOG)
    return wh.join(CATALOG)


def shown(wh: Location, scratch: Location) -> tuple[str, int] | None:
    """(snapshot id, version) the catalog shows; None when missing, unreadable, or built for another location."""
    path = wh.local_copy(CATALOG, scratch)
    if path is None:
        return None
    try:
        con = duckdb.connect(path, read_only=True)
    except duckdb.Error:
        return None
    try:
        row = con.execute("SELECT snapshot_id, version, warehouse FROM pipeline_snapshot").fetchone()
    except duckdb.Error:
        return None  # an older catalog: rebuild it
    finally:
        con.close()
    if row is None or str(row[2]) != wh.url:
        return None  # moved or copied: rebuild
    return str(row[0]), int(row[1])


def show(wh: Location, snap: Snapshot, scratch: Location, only_if_stale: bool = False) -> None:
    """Point the catalog and (local disk) ``current`` at ``snap``.

    What they showed before is stamped retired first, so its grace period counts from the switch.
    ``only_if_stale``: the catalog is rebuilt only when it shows another snapshot; ``current`` is
    pointed again either way (cheap, and it repairs a run killed between the two).
    """
    before = shown(wh, scratch)
    if only_if_stale and before == (snap.id, snap.version):
        if commits.current_id(wh) != snap.id:
            commits.project(wh, snap, scratch)
        return
    if before is not None and before[1] != snap.version:
        commits.retire(wh, before[1])
    commits.project(wh, snap, scratch)
    build_catalog(wh, snap, scratch)


def memory_connection(snap: Snapshot) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the same views; for read-only CLI queries."""
    con = duckdb.connect(":memory:")
    snap.warehouse.attach(con)
    define_views(con, snap, comments=False)
    return con
