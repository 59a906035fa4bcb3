"""Every table is also a Delta Lake table over the warehouse's own files: no data copied.

The project's commit (``commits/<version>.json``) stays the one atomic step across tables.
After it, each table whose file set changed gets one Delta commit at ``data/<table>/``:
removes for the files it no longer has, adds for the new ones, written with ``deltalake``
(delta-rs) over files that already exist. Every Delta commit records the project version
it reflects as an app transaction (``APP_ID``), so ``catch_up`` is idempotent: a table
whose recorded version is the target's is left alone, and a run killed between the
project commit and the Delta commits is caught up by the next run (one Delta commit may
then cover several project versions). A table whose files did not change gets no commit.

Statistics come from the files' own Parquet footers: exact ``numRecords`` and
``nullCount``, and min/max where they are exact bounds (readers skip files by them, so a
wrong bound would drop rows). Timestamps are written to the millisecond as Delta readers
expect, the minimum rounded down and the maximum rounded up, so both stay true bounds;
long strings, booleans and lists get no min/max.

Delta readers see each table atomically, but two tables may briefly be a version apart
(one table's commit is visible before the next table's); the DuckDB catalog is the
multi-table-consistent view.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schema
from pipeline.storage.location import Location
from pipeline.warehouse.commits import DATA, Snapshot

APP_ID = "seed-pipeline"  # the app transaction that records which project version a Delta version reflects
CHECKPOINT_EVERY = 10  # Delta versions between checkpoints: readers replay at most this many JSON commits
STRING_STATS_MAX = 64  # longer strings get no min/max: they would only grow the log
FOOTER_THREADS = 16  # footers read concurrently (object stores: one ranged GET each)
DELTA_LOG = "_delta_log"


@dataclass(frozen=True)
class Published:
    """What ``catch_up`` did: Delta versions committed per table, tables it could not bring up to date."""

    target: int  # the project version every table now reflects (unless it failed)
    committed: Mapping[str, int] = field(default_factory=dict)  # table -> new Delta version
    failed: Mapping[str, str] = field(default_factory=dict)  # table -> one-line reason
    current: Mapping[str, frozenset[str]] = field(default_factory=dict)  # table -> files its Delta version names
    seconds: float = 0.0  # what bringing the logs up to date cost (the benchmark reports it)

    @property
    def complete(self) -> bool:
        return not self.failed


def table_root(table: str) -> str:
    """A table's root relative to the warehouse: its Parquet files and its ``_delta_log/``."""
    return f"{DATA}/{table}"


def table_uri(wh: Location, table: str) -> str:
    return wh.join(table_root(table))


def storage_options(wh: Location) -> dict[str, str] | None:
    """delta-rs (object_store) options for the warehouse: the same endpoint and keys as its other reads."""
    return wh.delta_options()


# --- statistics from the footer -------------------------------------------------------------


def _ms_floor(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _ms_ceil(value: datetime) -> str:
    if value.microsecond % 1000:
        value = value + timedelta(microseconds=1000 - value.microsecond % 1000)
    return _ms_floor(value)


def _bounds(kind: str, low: Any, high: Any) -> tuple[Any, Any] | None:
    """Delta's min/max for one column, or None where no exact bound can be given."""
    if kind in ("int64", "int32"):
        return int(low), int(high)
    if kind == "timestamp" and isinstance(low, datetime) and isinstance(high, datetime):
        return _ms_floor(low), _ms_ceil(high)
    if kind == "string" and isinstance(low, str) and isinstance(high, str):
        if len(low) <= STRING_STATS_MAX and len(high) <= STRING_STATS_MAX:
            return low, high
    return None


def footer_stats(table: schema.Table, metadata: pq.FileMetaData) -> dict[str, Any]:
    """Delta ``stats`` of one file: exact row count, null counts, and bounds (see the module docstring)."""
    names = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for col in table.columns:
        i = names.get(col.name)
        if i is None or col.type == "list<string>":
            continue
        stats = [metadata.row_group(g).column(i).statistics for g in range(metadata.num_row_groups)]
        if any(s is None or not s.has_null_count for s in stats):
            continue
        nulls[col.name] = sum(s.null_count for s in stats)
        if col.type == "bool":
            continue  # a two-valued column: bounds would skip nothing
        valued = [(g, s) for g, s in enumerate(stats) if metadata.row_group(g).num_rows > s.null_count]
        if not valued or any(not s.has_min_max for _, s in valued):
            continue  # no values, or a row group with values but no bounds: no bound for the file
        bound = _bounds(col.type, min(s.min for _, s in valued), max(s.max for _, s in valued))
        if bound is not None:
            mins[col.name], maxs[col.name] = bound
    return {"numRecords": metadata.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}


# --- reading what a table's Delta log holds -------------------------------------------------


def _open(uri: str, options: dict[str, str] | None) -> Any:
    """The table's newest Delta state, or None when it has no Delta log yet."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(uri, storage_options=options)
    except TableNotFoundError:
        return None


def delta_files(dt: Any) -> frozenset[str]:
    """Paths (relative to the table root) of the files a loaded Delta version names."""
    adds = dt.get_add_actions(flatten=False)
    return frozenset(str(p) for p in adds.column("path").to_pylist())


# --- committing -----------------------------------------------------------------------------


def _adds(wh: Location, table: schema.Table, rels: list[str]) -> list[Any]:
    """An AddAction per new file: size and modification time from a listing, stats from its footer."""
    from deltalake.transaction import AddAction

    root = table_root(table.name)
    listed = {e.rel: e for e in wh.list_files(root)}

    def one(rel: str) -> Any:
        entry = listed.get(rel)
        if entry is None:
            raise FileNotFoundError(f"{wh.join(rel)}: named by the commit but not in storage")
        with wh.open_read(rel) as fh:
            metadata = pq.read_metadata(fh)
        stats = json.dumps(footer_stats(table, metadata), separators=(",", ":"))
        return AddAction(rel[len(root) + 1 :], entry.size, {}, entry.mtime_ns // 1_000_000, True, stats)

    with ThreadPoolExecutor(max_workers=min(FOOTER_THREADS, max(1, len(rels)))) as pool:
        return list(pool.map(one, rels))


def _configuration(log_retention: timedelta) -> dict[str, str | None]:
    hours = max(1, int(log_retention.total_seconds() // 3600))
    return {
        "delta.checkpointInterval": str(CHECKPOINT_EVERY),
        "delta.logRetentionDuration": f"interval {hours} hours",
        "delta.deletedFileRetentionDuration": f"interval {hours} hours",
    }


def _delta_schema(table: schema.Table) -> Any:
    from deltalake import Schema

    return Schema.from_arrow(table.arrow_schema().remove_metadata())


def _widen(dt: Any, table: schema.Table) -> None:
    """Columns added to the declaration since the Delta table was created: added, nullable (old files read NULL)."""
    from deltalake import Field, Schema

    have = {f.name for f in dt.schema().fields}
    new = [f for f in table.arrow_schema() if f.name not in have]
    if new:
        fields = Schema.from_arrow(pa.schema([f.with_nullable(True) for f in new])).fields
        dt.alter.add_columns([Field(f.name, f.type, nullable=True) for f in fields])


def _commit_table(
    wh: Location,
    table: schema.Table,
    target: Snapshot,
    known: Callable[[int], Snapshot | None],
    now_ms: int,
    log_retention: timedelta,
) -> tuple[int | None, frozenset[str]]:
    """Bring one table's Delta log to ``target``; (new Delta version or None, files it now names)."""
    from deltalake.transaction import (
        CommitProperties,
        PostCommitHookProperties,
        RemoveAction,
        Transaction,
        create_table_with_add_actions,
    )

    root = table_root(table.name)
    wanted = frozenset(rel[len(root) + 1 :] for rel in target.files.get(table.name, []))
    uri, options = table_uri(wh, table.name), storage_options(wh)
    dt = _open(uri, options)
    props = CommitProperties(
        app_transactions=[Transaction(APP_ID, target.version)],
        custom_metadata={
            "pipeline_version": str(target.version),
            "pipeline_run_id": str(target.meta.get("run_id", "")),
        },
        max_commit_retries=0,  # idempotency is ours: a stale commit must fail, not land as a new version
    )
    hooks = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=True)
    if dt is None:
        adds = _adds(wh, table, [f"{root}/{p}" for p in sorted(wanted)])
        create_table_with_add_actions(
            uri,
            _delta_schema(table),
            adds,
            mode="error",
            name=table.name,
            description=f"{table.description} Grain: {table.grain}.",
            configuration=_configuration(log_retention),
            storage_options=options,
            commit_properties=props,
            post_commithook_properties=hooks,
        )
        return 0, wanted
    recorded = dt.transaction_version(APP_ID)
    if recorded is not None and recorded >= target.version:
        return None, delta_files(dt)
    base = known(recorded) if recorded is not None else None
    have = frozenset(r[len(root) + 1 :] for r in base.files.get(table.name, [])) if base else delta_files(dt)
    _widen(dt, table)
    if have == wanted:
        return None, wanted
    removes = [RemoveAction(p, True, now_ms) for p in sorted(have - wanted)]
    adds = _adds(wh, table, [f"{root}/{p}" for p in sorted(wanted - have)])
    dt = _open(uri, options)  # reloaded: the schema may have been widened above
    dt.create_write_transaction(
        [*removes, *adds],
        mode="append",
        schema=dt.schema(),
        commit_properties=props,
        post_commithook_properties=hooks,
    )
    return int(dt.version()) + 1, wanted


def catch_up(
    wh: Location,
    target: Snapshot,
    known: Callable[[int], Snapshot | None],
    log_retention: timedelta,
    now: datetime | None = None,
    tables: tuple[schema.Table, ...] = schema.TABLES,
) -> Published:
    """Bring every table's Delta log to the project version ``target`` (the caller holds the writer lock).

    ``known`` returns a committed snapshot by version (None once collected): the files of the
    version a table last recorded, so an unchanged table costs one log read and no footer.
    A table that fails is reported, not raised: the project commit stands, the next run catches up.
    """
    t0 = time.perf_counter()
    now_ms = int((now or datetime.now(UTC)).timestamp() * 1000)
    committed: dict[str, int] = {}
    failed: dict[str, str] = {}
    current: dict[str, frozenset[str]] = {}
    for table in tables:
        try:
            version, files = _commit_table(wh, table, target, known, now_ms, log_retention)
        except Exception as exc:  # one table's log must not hide the others' (nor undo the commit)
            failed[table.name] = " ".join(f"{type(exc).__name__}: {exc}".split())
            continue
        current[table.name] = files
        if version is not None:
            committed[table.name] = version
    return Published(target.version, committed, failed, current, time.perf_counter() - t0)


def project_versions(wh: Location, table: str) -> list[tuple[int, int]]:
    """(Delta version, project version it reflects) of every Delta commit still in the table's log."""
    dt = _open(table_uri(wh, table), storage_options(wh))
    if dt is None:
        return []
    out = []
    for entry in dt.history():
        recorded = entry.get("pipeline_version")
        if recorded is not None:
            out.append((int(entry["version"]), int(recorded)))
    return sorted(out)


def version_for(wh: Location, table: str, project_version: int) -> int | None:
    """The Delta version of ``table`` whose rows are those of ``project_version`` (for Delta time travel)."""
    found = [d for d, p in project_versions(wh, table) if p <= project_version]
    return max(found) if found else None
