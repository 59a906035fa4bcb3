"""Rows of every table as three Delta readers we did not write see them, and as `pipeline query` does.

Readers: deltalake (delta-rs), polars (`read_delta`), and DuckDB 1.5.5's delta extension
(delta-kernel-rs) in a DuckDB 1.5.5 venv, .venv-bi-s3, built from tests/bi/requirements-s3.txt and
shared with the S3 BI-client test (DuckDB 2.0 cannot load extensions offline). Rows are compared as sorted tuples in the declared column order,
timestamps as epoch microseconds, so a difference in any value, any row or any reader shows.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pyarrow as pa

from harness.envs import BI_S3_REQUIREMENTS, BI_S3_VENV, ensure_venv
from pipeline import schema
from pipeline.storage.location import Location
from pipeline.warehouse import commits, delta, query

REPO = Path(__file__).resolve().parent.parent
DELTA_DIR = REPO / "tests" / "delta"
TABLE_NAMES = tuple(t.name for t in schema.TABLES)
Rows = list[tuple[Any, ...]]


def _stamps(table: str) -> list[str]:
    return [c.name for c in schema.table(table).columns if c.type == "timestamp"]


def normalize(data: pa.Table, table: str) -> Rows:
    """Rows in declared column order, timestamps as epoch microseconds, sorted."""
    columns = []
    for name in schema.table(table).column_names:
        col = data.column(name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        columns.append(col.to_pylist())
    rows = [tuple(tuple(v) if isinstance(v, list) else v for v in row) for row in zip(*columns, strict=True)]
    return sorted(rows, key=repr)


def pipeline_rows(wh: str, as_of: str | None = None) -> dict[str, Rows]:
    """What `pipeline query` returns for every table (the newest version, or ``--as-of``)."""
    loc = Location.parse(wh)
    return {t: normalize(query.run_query(loc, f'SELECT * FROM "{t}"', as_of), t) for t in TABLE_NAMES}


def _versions(wh: Location, project_version: int | None) -> dict[str, int | None]:
    if project_version is None:
        return dict.fromkeys(TABLE_NAMES)
    return {t: delta.version_for(wh, t, project_version) for t in TABLE_NAMES}


def deltalake_rows(wh: str, project_version: int | None = None) -> dict[str, Rows]:
    from deltalake import DeltaTable

    loc = Location.parse(wh)
    out = {}
    for t, version in _versions(loc, project_version).items():
        dt = DeltaTable(delta.table_uri(loc, t), version=version, storage_options=delta.storage_options(loc))
        out[t] = normalize(dt.to_pyarrow_table(), t)
    return out


def polars_rows(wh: str, project_version: int | None = None) -> dict[str, Rows]:
    import polars as pl

    loc = Location.parse(wh)
    out = {}
    for t, version in _versions(loc, project_version).items():
        frame = pl.read_delta(delta.table_uri(loc, t), version=version, storage_options=delta.storage_options(loc))
        out[t] = normalize(frame.to_arrow(), t)
    return out


def duckdb_rows(wh: str, s3_endpoint: str | None = None) -> dict[str, Rows]:
    """DuckDB 1.5.5 + delta extension, in .venv-bi-s3 (the current version of each table)."""
    python, _ = ensure_venv(BI_S3_VENV, BI_S3_REQUIREMENTS)
    loc = Location.parse(wh)
    spec: dict[str, Any] = {
        "tables": {t: delta.table_uri(loc, t) for t in TABLE_NAMES},
        "timestamps": {t: _stamps(t) for t in TABLE_NAMES},
        "s3": None,
    }
    if s3_endpoint:
        spec["s3"] = {
            "key": os.environ["AWS_ACCESS_KEY_ID"],
            "secret": os.environ["AWS_SECRET_ACCESS_KEY"],
            "region": os.environ.get("AWS_REGION", "us-east-1"),
            "endpoint": s3_endpoint.removeprefix("http://"),
        }
    proc = subprocess.run(
        [str(python), str(DELTA_DIR / "duckdb_probe.py"), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise AssertionError(f"DuckDB delta probe failed:\n{proc.stdout}\n{proc.stderr}")
    out = {}
    for t, got in json.loads(proc.stdout).items():
        index = {c: i for i, c in enumerate(got["columns"])}
        order = [index[c] for c in schema.table(t).column_names]
        rows = [tuple(tuple(v) if isinstance(v, list) else v for v in (r[i] for i in order)) for r in got["rows"]]
        out[t] = sorted(rows, key=repr)
    return out


def missing_files(wh: str) -> list[str]:
    """Files that a table's current Delta version, or a retained project version, names but storage lacks."""
    from deltalake import DeltaTable

    loc = Location.parse(wh)
    present = {e.rel for e in loc.list_files(commits.DATA)}
    named: set[str] = set()
    for t in TABLE_NAMES:
        dt = DeltaTable(delta.table_uri(loc, t), storage_options=delta.storage_options(loc))
        named |= {f"{delta.table_root(t)}/{p}" for p in delta.delta_files(dt)}
    for v in commits.versions(loc):
        snap = commits.read_version(loc, v)
        if snap is not None:
            named |= {f for files in snap.files.values() for f in files}
    return sorted(named - present)
