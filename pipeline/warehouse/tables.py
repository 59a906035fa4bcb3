"""Reading a snapshot's tables and writing small run-private files, on local disk or object storage."""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schema
from pipeline.storage.location import Location
from pipeline.warehouse.commits import Snapshot


def read(snap: Snapshot, table: str, columns: list[str] | None = None) -> pa.Table:
    urls = snap.table_files(table)
    if not urls:
        empty: pa.Table = schema.table(table).arrow_schema().empty_table()
        return empty.select(columns) if columns else empty
    return snap.warehouse.read_parquet(urls, columns)


def write_ids(folder: Location, name: str, column: str, values: Iterable[str]) -> str:
    """A one-column Parquet file of ids (e.g. articles to drop) that merge tasks anywhere can read."""
    data = pa.table({column: pa.array(sorted(values), pa.string())})
    with folder.open_write(name) as fh:
        pq.write_table(data, fh)
    return folder.join(name)


def scratch_dir(staging: Location) -> Location:
    """A local folder for temporary files of this run (catalog builds, snapshot trees)."""
    return staging.scratch()


def remove_scratch(staging: Location) -> None:
    staging.scratch().delete_tree("")
