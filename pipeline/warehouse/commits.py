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
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import filelock

from pipeline.errors import NoWarehouse, WarehouseLocked
from pipeline.storage.location import Location, fsync_dir

DATA = "data"
COMMITS = "commits"
SNAPSHOTS = "snapshots"
STAGING = "staging"
CURRENT = "current"
CATALOG = "catalog.duckdb"
LOCK = ".lock"
LEASE = ".lease.json"
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
    for entry in _list(wh, COMMITS):
        name = entry.rsplit("/", 1)[-1]
        stem, _, ext = name.partition(".")
        if ext == "json" and stem.isdigit() and len(stem) == VERSION_DIGITS:
            out.append(int(stem))
    return sorted(out)


def _list(wh: Location, folder: str) -> list[str]:
    if wh.local:
        try:
            return [f"{folder}/{n}" for n in os.listdir(wh.join(folder))]
        except FileNotFoundError:
            return []
    return [e.rel for e in wh.list_files(folder)]


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


class WriterLock:
    """Only one run writes at a time: flock on local disk, an expiring lease on object stores.

    The lock keeps two runs from doing the same work; the create-only commit is what makes
    a second writer harmless even when a lease expired under a stalled run.
    """

    def check(self) -> None:
        """Raise ``LeaseLost`` if this run no longer holds the lock (cheap: call it after every batch)."""

    def confirm(self) -> None:
        """Raise ``LeaseLost`` unless the lock is held right now (asks the store): the last step before the commit."""
        self.check()

    def release(self) -> None:
        raise NotImplementedError


class LeaseLost(WarehouseLocked):
    """This run's writer lease expired or was taken over: it stops and publishes nothing (exit 75)."""


class _FileLock(WriterLock):
    def __init__(self, lock: filelock.BaseFileLock) -> None:
        self.lock = lock

    def release(self) -> None:
        self.lock.release()


def _locked_message(wh: Location, holder: str) -> str:
    return f"another run is writing to {wh.url} ({holder}); this run did nothing. Retry later or pass --wait SECONDS."


class Lease(WriterLock):
    """``.lease.json`` created with a conditional PUT, renewed in the background, taken over once expired."""

    def __init__(self, wh: Location, run_id: str, seconds: float) -> None:
        self.wh, self.run_id, self.seconds = wh, run_id, seconds
        self.etag: str | None = None
        self.lost = False
        self.why = ""
        self.valid_until = 0.0  # time.monotonic() when the last body we wrote expires (counted from before its PUT)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renewing = threading.Lock()  # the background renewal and confirm() never race on the ETag

    def _body(self) -> bytes:
        return json.dumps(
            {
                "run_id": self.run_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "expires_at": time.time() + self.seconds,
            }
        ).encode()

    def acquire(self, wait_seconds: float) -> None:
        """Create the lease, or take over an expired one; a lost reply is settled by reading back (Location)."""
        deadline = time.monotonic() + wait_seconds
        while True:
            started = time.monotonic()
            if self.wh.create_only(LEASE, self._body()):
                current = self.wh.head(LEASE)
                if current is not None and _holder(current[0]).get("run_id") == self.run_id:
                    self.etag, self.valid_until = current[1], started + self.seconds
                    break
            current = self.wh.head(LEASE)
            if current is not None:
                holder = _holder(current[0])
                if float(holder.get("expires_at", 0)) < time.time():  # its run died: take over, one winner
                    started = time.monotonic()
                    etag = self.wh.replace_if(LEASE, self._body(), current[1])
                    if etag is not None:
                        self.etag, self.valid_until = etag, started + self.seconds
                        break
                if time.monotonic() >= deadline:
                    raise WarehouseLocked(_locked_message(self.wh, f"lease held by run {holder.get('run_id')}"))
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        self._thread = threading.Thread(target=self._renew, name="pipeline-lease", daemon=True)
        self._thread.start()

    def _renew_once(self) -> bool:
        """One renewal (If-Match our ETag); False once the lease is lost. Transient errors raise OSError.

        Safe even after our own expiry: a run that took over changed the ETag, so the PUT fails (412).
        """
        with self._renewing:
            if self.lost:
                return False
            started = time.monotonic()
            etag = self.wh.replace_if(LEASE, self._body(), self.etag or "")
            if etag is None:
                self.lost, self.why = True, "another run took it over after it expired"
                return False
            self.etag, self.valid_until = etag, started + self.seconds
            return True

    def _renew(self) -> None:
        """Renew every third of the lease; after a transient failure try again sooner."""
        pause = self.seconds / 3
        while not self._stop.wait(pause):
            try:
                if not self._renew_once():
                    return
                pause = self.seconds / 3
            except OSError:
                pause = max(0.05, min(self.seconds / 10, self.valid_until - time.monotonic()))

    def check(self) -> None:
        """No I/O while the lease is known valid; past its expiry, one renewal decides (a takeover makes it fail)."""
        if not self.lost and time.monotonic() >= self.valid_until:
            try:
                self._renew_once()
            except OSError as exc:
                self.lost, self.why = True, f"it expired and could not be renewed: {exc}"
        if self.lost:
            raise LeaseLost(
                f"this run lost its writer lease on {self.wh.url} ({self.why}); it stopped and published nothing"
            )

    def confirm(self) -> None:
        """Renew now, so the commit PUT that follows starts with a whole lease period ahead of it."""
        self.check()
        try:
            self._renew_once()
        except OSError as exc:
            if time.monotonic() >= self.valid_until - self.seconds / 3:
                raise LeaseLost(
                    f"this run could not renew its writer lease on {self.wh.url} before the commit ({exc}); "
                    "it published nothing"
                ) from exc
        self.check()

    def release(self) -> None:
        """Stop renewing and delete the lease only if it is still ours (If-Match our ETag)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.lost or self.etag is None:
            return
        try:
            self.wh.delete_if(LEASE, self.etag)
        except OSError:
            pass  # it expires on its own; the next run waits at most one lease period


def _holder(body: bytes) -> dict[str, Any]:
    """A lease's content; an unreadable one counts as expired (it can then be taken over, by one run)."""
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def acquire(wh: Location, run_id: str, wait_seconds: float, lease_seconds: float) -> WriterLock:
    """Exclusive writer access, or WarehouseLocked (exit 75) after ``wait_seconds``."""
    if wh.local:
        os.makedirs(wh.root, exist_ok=True)
        lock = filelock.FileLock(wh.join(LOCK))
        try:
            lock.acquire(timeout=wait_seconds)
        except filelock.Timeout:
            raise WarehouseLocked(_locked_message(wh, f"lock {LOCK} is held")) from None
        return _FileLock(lock)
    lease = Lease(wh, run_id, lease_seconds)
    lease.acquire(wait_seconds)
    return lease


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


# --- local projection: current/ for direct Parquet readers ------------------------------


def current_id(wh: Location) -> str | None:
    """Snapshot id that ``current`` points at (local disk), or None."""
    if not wh.local:
        return None
    link = wh.join(CURRENT)
    if not os.path.lexists(link):
        return None
    return os.path.basename(os.path.realpath(link))


def project(wh: Location, snap: Snapshot, scratch: str) -> None:
    """Local disk: make ``snapshots/<id>/`` (hard links to data/) and point ``current`` at it."""
    if not wh.local:
        return
    final = wh.join(f"{SNAPSHOTS}/{snap.id}")
    if not os.path.isdir(final):
        tree = os.path.join(scratch, f"tree-{snap.id}")
        shutil.rmtree(tree, ignore_errors=True)
        for table, rels in snap.files.items():
            folder = os.path.join(tree, table)
            os.makedirs(folder)
            for rel in rels:
                _link_or_copy(wh.join(rel), os.path.join(folder, display_name(rel)))
            fsync_dir(folder)
        os.makedirs(wh.join(SNAPSHOTS), exist_ok=True)
        os.rename(tree, final)
        fsync_dir(wh.join(SNAPSHOTS))
    tmp = wh.join(f"{CURRENT}.tmp-{snap.id}")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.join(SNAPSHOTS, snap.id), tmp)
    os.replace(tmp, wh.join(CURRENT))
    fsync_dir(wh.root)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# --- staging and garbage ------------------------------------------------------------------


def staging(wh: Location, run_id: str) -> Location:
    loc = wh.child(f"{STAGING}/{run_id}")
    loc.makedirs("")
    return loc


def clean_staging(wh: Location) -> None:
    """Remove what killed runs left behind; the caller holds the writer lock."""
    if wh.local:
        shutil.rmtree(wh.join(STAGING), ignore_errors=True)
        for name in os.listdir(wh.root):
            if name.startswith(f"{CURRENT}.tmp"):
                os.unlink(wh.join(name))
    else:
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
