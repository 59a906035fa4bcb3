"""Warehouse layout, the run lock, atomic publish and garbage collection.

    warehouse/
      current -> snapshots/<id>      symlink; swapping it is the one atomic commit
      snapshots/<id>/<table>/*.parquet   immutable; unchanged files are hard links
      snapshots/<id>/snapshot.json   what the snapshot holds
      catalog.duckdb                 views over the current snapshot (replaced whole)
      staging/<run_id>/              a run's work in progress; never read by anyone else
      .lock                          held (flock) by the one run allowed to write

Readers that resolved ``current`` (or opened the catalog) keep a complete, older
snapshot until they look again; old snapshots are deleted only after a grace period.
A killed run leaves only ``staging/`` debris, removed by the next run under the lock.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

import filelock

from pipeline.errors import NoWarehouse, WarehouseLocked

SNAPSHOTS = "snapshots"
STAGING = "staging"
CURRENT = "current"
CATALOG = "catalog.duckdb"
LOCK = ".lock"
SNAPSHOT_FILE = "snapshot.json"
LAST_FAILURE = "last_failure.json"
RETIRED = "RETIRED_AT"


@dataclass(frozen=True)
class Snapshot:
    """A published, immutable state of every table."""

    id: str
    path: str  # absolute
    files: dict[str, list[str]]  # table -> file names inside <path>/<table>/
    meta: dict[str, Any]

    def table_files(self, table: str) -> list[str]:
        return [os.path.join(self.path, table, f) for f in self.files.get(table, [])]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def acquire_lock(warehouse: str, wait_seconds: float) -> filelock.BaseFileLock:
    """Exclusive writer lock; the kernel drops it when the holder dies, even by SIGKILL."""
    os.makedirs(warehouse, exist_ok=True)
    lock = filelock.FileLock(os.path.join(warehouse, LOCK))
    try:
        lock.acquire(timeout=wait_seconds)
    except filelock.Timeout:
        raise WarehouseLocked(
            f"another run is writing to {warehouse} (lock {LOCK} is held); "
            "this run did nothing. Retry later or pass --wait SECONDS."
        ) from None
    return lock


def read_current(warehouse: str) -> Snapshot | None:
    link = os.path.join(warehouse, CURRENT)
    if not os.path.lexists(link):
        return None
    return read_snapshot(os.path.realpath(link))


def require_current(warehouse: str) -> Snapshot:
    snap = read_current(warehouse)
    if snap is None:
        raise NoWarehouse(f"no published data in {warehouse}: run `pipeline run` first")
    return snap


def read_snapshot(path: str) -> Snapshot:
    with open(os.path.join(path, SNAPSHOT_FILE), encoding="utf-8") as fh:
        meta = json.load(fh)
    return Snapshot(meta["id"], path, meta["files"], meta)


def clean_staging(warehouse: str) -> int:
    """Remove what killed runs left behind; caller holds the lock."""
    root = os.path.join(warehouse, STAGING)
    removed = 0
    if os.path.isdir(root):
        for name in os.listdir(root):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            removed += 1
    for name in os.listdir(warehouse):
        if name.startswith(f"{CURRENT}.tmp"):
            os.unlink(os.path.join(warehouse, name))
            removed += 1
    return removed


def staging_dir(warehouse: str, run_id: str) -> str:
    path = os.path.join(warehouse, STAGING, run_id)
    os.makedirs(path, exist_ok=True)
    return path


def link_or_copy(src: str, dst: str) -> None:
    """Reuse an immutable file in a new snapshot without copying its bytes."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def seal_snapshot(build_dir: str, warehouse: str, meta: dict[str, Any]) -> Snapshot:
    """Write snapshot.json, fsync everything and move the folder under snapshots/ (not yet current)."""
    with open(os.path.join(build_dir, SNAPSHOT_FILE), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    for table in meta["files"]:
        folder = os.path.join(build_dir, table)
        for name in os.listdir(folder):
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(folder)
    _fsync_dir(build_dir)
    root = os.path.join(warehouse, SNAPSHOTS)
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, meta["id"])
    if os.path.exists(final):  # left by a run killed between seal and commit: rebuild it
        shutil.rmtree(final)
    os.rename(build_dir, final)
    _fsync_dir(root)
    return read_snapshot(final)


def commit(warehouse: str, snap: Snapshot) -> None:
    """The atomic publish: point ``current`` at the new snapshot in one rename."""
    tmp = os.path.join(warehouse, f"{CURRENT}.tmp-{snap.id}")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.join(SNAPSHOTS, snap.id), tmp)
    os.replace(tmp, os.path.join(warehouse, CURRENT))
    _fsync_dir(warehouse)


def retire(warehouse: str, snapshot_ids: set[str], now: float | None = None) -> None:
    """Stamp snapshots that are about to stop being visible (written just before the commit).

    The grace period counts from this stamp. A snapshot that never got one was never
    published (a run killed between seal and commit) and nobody can be reading it.
    """
    stamp = str(time.time() if now is None else now)
    for sid in snapshot_ids:
        folder = os.path.join(warehouse, SNAPSHOTS, sid)
        if os.path.isdir(folder):
            tmp = os.path.join(folder, f"{RETIRED}.tmp")
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(stamp)
            os.replace(tmp, os.path.join(folder, RETIRED))


def collect_garbage(warehouse: str, keep: set[str], grace_seconds: float, now: float | None = None) -> list[str]:
    """Delete snapshots retired more than ``grace_seconds`` ago, and never-published ones; never ``keep``."""
    root = os.path.join(warehouse, SNAPSHOTS)
    if not os.path.isdir(root):
        return []
    now = time.time() if now is None else now
    removed = []
    for sid in sorted(os.listdir(root)):
        if sid in keep:
            continue
        try:
            with open(os.path.join(root, sid, RETIRED), encoding="utf-8") as fh:
                retired_at = float(fh.read().strip())
        except (OSError, ValueError):
            retired_at = None  # never published
        if retired_at is None or now - retired_at >= grace_seconds:
            shutil.rmtree(os.path.join(root, sid), ignore_errors=True)
            removed.append(sid)
    return removed


def record_failure(warehouse: str, run_id: str, failed_at: str, error: str) -> None:
    """Remember a failed run (it published nothing) for `pipeline status`; atomic replace."""
    tmp = os.path.join(warehouse, f"{LAST_FAILURE}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"run_id": run_id, "failed_at": failed_at, "error": error}, fh)
    os.replace(tmp, os.path.join(warehouse, LAST_FAILURE))


def read_failure(warehouse: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(warehouse, LAST_FAILURE), encoding="utf-8") as fh:
            data: dict[str, Any] = json.load(fh)
            return data
    except (OSError, ValueError):
        return None
