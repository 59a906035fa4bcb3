"""Read-only SQL over the current snapshot, for the `pipeline query` command.

Queries run in an in-memory DuckDB whose views point at the files of the newest
committed snapshot (local paths or s3:// URLs): no lock on catalog.duckdb, correct
after the warehouse is moved, and no statement can write (only SELECT-like
statements pass).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schema
from pipeline.errors import QueryError
from pipeline.storage.location import Location
from pipeline.warehouse import commits, history
from pipeline.warehouse.catalog import memory_connection

READ_ONLY = {"SELECT", "EXPLAIN"}


def connect(warehouse: Location, as_of: str | None = None) -> duckdb.DuckDBPyConnection:
    """Views over the newest snapshot, or over the retained version ``as_of`` names (number or time)."""
    snap = history.as_of(warehouse, as_of) if as_of else commits.require_newest(warehouse)
    con = memory_connection(snap)
    con.execute("SET lock_configuration = true")
    return con


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def run_query(warehouse: Location, sql: str, as_of: str | None = None) -> pa.Table:
    con = connect(warehouse, as_of)
    try:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise QueryError(_one_line(exc)) from None
        if not statements:
            raise QueryError("empty query")
        for stmt in statements:
            kind = str(stmt.type).rsplit(".", 1)[-1]
            if kind not in READ_ONLY:
                raise QueryError(f"refused: {kind} statements are not allowed; `pipeline query` is read-only")
        try:
            for stmt in statements[:-1]:
                con.execute(stmt)
            relation = con.sql(statements[-1].query)
            if relation is None:
                raise QueryError("the statement returned no result set")
            return relation.to_arrow_table()
        except duckdb.Error as exc:
            raise QueryError(_one_line(exc)) from None
    finally:
        con.close()


def list_tables(warehouse: Location, as_of: str | None = None) -> pa.Table:
    con = connect(warehouse, as_of)
    try:
        rows = []
        for t in schema.TABLES:
            count = con.execute(f'SELECT count(*) FROM "{t.name}"').fetchone()
            rows.append({"table": t.name, "rows": count[0] if count else 0, "grain": t.grain})
        return pa.Table.from_pylist(rows)
    finally:
        con.close()


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    return str(value)


def render(table: pa.Table, fmt: str, to_file: bool = False) -> bytes:
    """The result in ``fmt``: text (UTF-8, one trailing newline), or Parquet bytes (``to_file`` only)."""
    if fmt == "parquet":
        if not to_file:
            raise QueryError("--format parquet needs --output FILE")
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        return bytes(sink.getvalue())
    rows = table.to_pylist()
    if fmt == "json":
        text = json.dumps(rows, default=str, ensure_ascii=False, indent=1)
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(table.column_names)
        writer.writerows([[("" if v is None else v) for v in r.values()] for r in rows])
        text = buf.getvalue().rstrip("\n")
    else:
        text = _text_table(table.column_names, [[_cell(v) for v in r.values()] for r in rows])
    return (text + "\n").encode("utf-8")


def _text_table(header: list[str], rows: list[list[str]], max_width: int = 60) -> str:
    clip = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in clip]) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    out = [line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in clip]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)
