"""Warehouse layout and the commit protocol: one protocol for local disk and object storage.

    <warehouse>/
      data/<table>/<part>.<snapshot>.parquet  immutable once written; later snapshots reference it
      commits/<version>.json                  one per committed snapshot: its files and row counts
      commits/<version>.retired               when it stopped being shown by the catalog
      catalog.duckdb                          views over the newest snapshot (replaced whole)
      staging/<run_id>/                       a run's work in progress; nobody else reads it
      last_failure.json                       the last failed run, for `pipeline status`
      local disk only:
      snapshots/<id>/<table>/<part>.parquet   hard links: each snapshot as a folder, for direct readers
      current -> snapshots/<id>               the newest snapshot (symlink)
      .lock                                   writer lock (flock; the kernel drops it when a run dies)
      object stores only:
      .lease.json                             writer lease (conditional PUTs; renewed; expires)

**The commit** is one create-only write of ``commits/<parent + 1>.json`` (a link into place
locally, ``If-None-Match: *`` on object stores). Of two runs that built on the same parent,
exactly one creates the file; the other publishes nothing. Data files are written (and
synced) before it, so a reader that takes the newest commit always finds every file.

**Readers** take the newest ``commits/*.json``. On local disk ``current`` and the catalog are
moved to the new snapshot right after the commit; a run killed in between leaves them on
the previous (complete) snapshot, and the next run moves them.

**Garbage**: a commit that is no longer the newest is *retired* when its successor is
committed or when the catalog stops showing it, whichever is later. It is deleted after the
grace period, and with it the data files that no live commit references. A data file that
no commit references (a killed or losing run's output) is deleted once it is older than the
grace period, so a run still writing is never robbed of its files.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import NoWarehouse, WarehouseLocked
from pipeline.storage.lease import WriterLock
from pipeline.storage.location import Location

DATA = "data"
COMMITS = "commits"
SNAPSHOTS = "snapshots"
STAGING = "staging"
CURRENT = "current"
CATALOG = "catalog.duckdb"
LAST_FAILURE = "last_failure.json"
VERSION_DIGITS = 20
FORMAT = 2


class CommitConflict(WarehouseLocked):
    """Another run committed on the same parent first; this run published nothing."""


@dataclass(frozen=True)
class Snapshot:
    """A committed, immutable state of every table."""

    id: str
    version: int
    warehouse: Location
    files: dict[str, list[str]]  # table -> file paths relative to the warehouse (data/...)
    file_rows: dict[str, int]  # relative path -> rows
    meta: dict[str, Any]

    def table_files(self, table: str) -> list[str]:
        """Full paths (local) or URLs (object store) of a table's files, for DuckDB and pyarrow."""
        return [self.warehouse.join(f) for f in self.files.get(table, [])]

    def rows(self, table: str) -> int:
        return sum(self.file_rows.get(f, 0) for f in self.files.get(table, []))

    @property
    def committed_at(self) -> float:
        return float(self.meta.get("committed_at_epoch", 0.0))


def commit_name(version: int) -> str:
    return f"{COMMITS}/{version:0{VERSION_DIGITS}d}.json"


def data_name(table: str, part: str, snapshot_id: str) -> str:
    return f"{DATA}/{table}/{part}.{snapshot_id}.parquet"


def display_name(rel: str) -> str:
    """``data/articles/2023-10.<id>.parquet`` -> ``2023-10.parquet``: the file's name in a snapshot folder."""
    base = rel.rsplit("/", 1)[-1]
    part = base.split(".", 1)[0]
    return f"{part}.parquet"


def _snapshot(wh: Location, meta: dict[str, Any]) -> Snapshot:
    files: dict[str, list[str]] = {}
    rows: dict[str, int] = {}
    for table, entries in meta["files"].items():
        files[table] = [e["file"] for e in entries]
        rows.update({e["file"]: int(e["rows"]) for e in entries})
    return Snapshot(meta["id"], int(meta["version"]), wh, files, rows, meta)


def versions(wh: Location) -> list[int]:
    """Committed versions, oldest first."""
    out = []
    for name in wh.list_names(COMMITS):
        stem, _, ext = name.partition(".")
        if ext == "json" and stem.isdigit() and len(stem) == VERSION_DIGITS:
            out.append(int(stem))
    return sorted(out)


def read_version(wh: Location, version: int) -> Snapshot | None:
    text = wh.read_text(commit_name(version))
    return _snapshot(wh, json.loads(text)) if text is not None else None


def read_newest(wh: Location) -> Snapshot | None:
    """The newest committed snapshot (None before the first run)."""
    found = versions(wh)
    if found:
        snap = read_version(wh, found[-1])
        if snap is not None:
            return snap
    return None


def require_newest(wh: Location) -> Snapshot:
    snap = read_newest(wh)
    if snap is None:
        raise NoWarehouse(f"no published data in {wh.url}: run `pipeline run` first")
    return snap


# --- writer exclusion ------------------------------------------------------------------


def acquire(wh: Location, run_id: str, wait_seconds: float, lease_seconds: float) -> WriterLock:
    """Exclusive writer access (the location's own kind of lock), or WarehouseLocked (exit 75) after ``wait_seconds``."""
    return wh.writer_lock(run_id, wait_seconds, lease_seconds)


# --- commit ----------------------------------------------------------------------------


def next_version(parent: Snapshot | None) -> int:
    return parent.version + 1 if parent is not None else 1


def commit(
    wh: Location,
    snapshot_id: str,
    version: int,
    files: dict[str, list[tuple[str, int]]],
    extra: dict[str, Any],
    now: datetime | None = None,
    lock: WriterLock | None = None,
) -> Snapshot:
    """The atomic publish: create ``commits/<version>.json`` (the parent's plus one) or lose to the run that did.

    ``lock`` is confirmed (renewed, on object stores) immediately before the PUT. A PUT whose reply
    was lost is settled by reading the commit back: if it holds our bytes, we published.
    """
    moment = now or datetime.now(UTC)
    meta = {
        "format": FORMAT,
        "version": version,
        "id": snapshot_id,
        "parent": version - 1 if version > 1 else None,
        "committed_at": moment.isoformat(),
        "committed_at_epoch": moment.timestamp(),
        "files": {t: [{"file": f, "rows": n} for f, n in entries] for t, entries in files.items()},
        **extra,
    }
    body = json.dumps(meta, indent=1, sort_keys=True).encode()
    if lock is not None:
        lock.confirm()
    if not wh.create_only(commit_name(version), body) and not _is_ours(wh, version, snapshot_id):
        raise CommitConflict(
            f"another run committed version {version} of {wh.url} first; this run published nothing "
            "(its files are collected after the grace period)"
        )
    return _snapshot(wh, meta)


def _is_ours(wh: Location, version: int, snapshot_id: str) -> bool:
    """Whether ``commits/<version>.json`` is this run's (its id is ours): the outcome of a PUT whose reply was lost."""
    try:
        text = wh.read_text(commit_name(version))
        found = json.loads(text) if text else None
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and found.get("id") == snapshot_id


def retire(wh: Location, version: int, now: float | None = None) -> None:
    """Stamp a commit the catalog is about to stop showing; its grace period counts from here."""
    wh.write_bytes(retired_name(version), str(time.time() if now is None else now).encode())


def retired_name(version: int) -> str:
    """``commits/<version>.retired``: when the catalog stopped showing that version (GC's grace counts from it)."""
    return f"{COMMITS}/{version:0{VERSION_DIGITS}d}.retired"


# --- the projection for direct Parquet readers: current/ (local disk) ------------------


def current_id(wh: Location) -> str | None:
    """Snapshot id that ``current`` points at; None when there is none (object stores keep no links)."""
    return wh.link_target(CURRENT)


def project(wh: Location, snap: Snapshot, scratch: Location) -> None:
    """Make ``snapshots/<id>/`` (hard links to data/) and point ``current`` at it; object stores: nothing."""
    folders = {table: {display_name(rel): rel for rel in rels} for table, rels in snap.files.items()}
    wh.link_tree(f"{SNAPSHOTS}/{snap.id}", folders, scratch)
    wh.point_link(CURRENT, f"{SNAPSHOTS}/{snap.id}")


# --- staging and garbage ------------------------------------------------------------------


def staging(wh: Location, run_id: str) -> Location:
    loc = wh.child(f"{STAGING}/{run_id}")
    loc.makedirs("")
    return loc


def clean_staging(wh: Location) -> None:
    """Remove what killed runs left behind; the caller holds the writer lock."""
    wh.delete_tree(STAGING)


# --- failures, for `pipeline status` ------------------------------------------------------


def record_failure(wh: Location, run_id: str, failed_at: str, error: str, stage: str | None = None) -> None:
    """Remember a failed run (it published nothing) and the stage it failed in; replaced whole."""
    record = {"run_id": run_id, "failed_at": failed_at, "stage": stage, "error": error}
    wh.write_bytes(LAST_FAILURE, json.dumps(record).encode())


def read_failure(wh: Location) -> dict[str, Any] | None:
    try:
        text = wh.read_text(LAST_FAILURE)
        data: dict[str, Any] | None = json.loads(text) if text else None
        return data
    except (OSError, ValueError):
        return None
