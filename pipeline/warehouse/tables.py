"""Reading a snapshot's tables and writing small run-private files, on local disk or object storage."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schema
from pipeline.storage.location import Location
from pipeline.warehouse.commits import Snapshot


def read_files(wh: Location, urls: list[str], columns: list[str] | None = None) -> pa.Table:
    """Parquet files of one table as one Arrow table (object stores read through s3fs)."""
    if wh.local:
        return pq.read_table(urls, columns=columns)
    keys = [u.removeprefix("s3://") for u in urls]
    return pq.read_table(keys, columns=columns, filesystem=wh.reader_fs())


def read(snap: Snapshot, table: str, columns: list[str] | None = None) -> pa.Table:
    urls = snap.table_files(table)
    if not urls:
        empty: pa.Table = schema.table(table).arrow_schema().empty_table()
        return empty.select(columns) if columns else empty
    return read_files(snap.warehouse, urls, columns)


def write_ids(folder: Location, name: str, column: str, values: Iterable[str]) -> str:
    """A one-column Parquet file of ids (e.g. articles to drop) that merge tasks anywhere can read."""
    data = pa.table({column: pa.array(sorted(values), pa.string())})
    with folder.open_write(name) as fh:
        pq.write_table(data, fh)
    return folder.join(name)


def _scratch_path(staging: Location) -> str:
    if staging.local:
        return staging.join("scratch")
    tag = hashlib.sha256(staging.url.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"pipeline-scratch-{tag}")


def scratch_dir(staging: Location) -> str:
    """A local folder for temporary files of this run (catalog builds, snapshot trees)."""
    path = _scratch_path(staging)
    os.makedirs(path, exist_ok=True)
    return path


def remove_scratch(staging: Location) -> None:
    shutil.rmtree(_scratch_path(staging), ignore_errors=True)
