"""One writer at a time: flock on local disk, an expiring lease on object stores.

The lock keeps two runs from doing the same work; the warehouse's create-only commit is what
makes a second writer harmless even when a lease expired under a stalled run.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import filelock

from pipeline.errors import WarehouseLocked

if TYPE_CHECKING:
    from pipeline.storage.location import Location
    from pipeline.storage.objects import ObjectPrefix


class WriterLock:
    """What a run holds while it writes; ``Location.writer_lock`` gives the kind the location supports."""

    def check(self) -> None:
        """Raise ``LeaseLost`` if this run no longer holds the lock (cheap: call it after every batch)."""

    def confirm(self) -> None:
        """Raise ``LeaseLost`` unless the lock is held right now (asks the store): the last step before the commit."""
        self.check()

    def release(self) -> None:
        raise NotImplementedError


class LeaseLost(WarehouseLocked):
    """This run's writer lease expired or was taken over: it stops and publishes nothing (exit 75)."""


class FileLock(WriterLock):
    """flock on a file in a local folder: the kernel drops it when the process dies, even by SIGKILL."""

    def __init__(self, lock: filelock.BaseFileLock) -> None:
        self.lock = lock

    @classmethod
    def acquire(cls, where: Location, path: str, wait_seconds: float) -> FileLock:
        lock = filelock.FileLock(path)
        try:
            lock.acquire(timeout=wait_seconds)
        except filelock.Timeout:
            raise WarehouseLocked(_locked_message(where, f"lock {os.path.basename(path)} is held")) from None
        return cls(lock)

    def release(self) -> None:
        self.lock.release()


def _locked_message(wh: Location, holder: str) -> str:
    return f"another run is writing to {wh.url} ({holder}); this run did nothing. Retry later or pass --wait SECONDS."


class Lease(WriterLock):
    """A lease object (``.lease.json``): created with a conditional PUT, renewed in the background,
    taken over once expired."""

    def __init__(self, wh: ObjectPrefix, name: str, run_id: str, seconds: float) -> None:
        self.wh, self.name, self.run_id, self.seconds = wh, name, run_id, seconds
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
            if self.wh.create_only(self.name, self._body()):
                current = self.wh.read_version(self.name)
                if current is not None and _holder(current[0]).get("run_id") == self.run_id:
                    self.etag, self.valid_until = current[1], started + self.seconds
                    break
            current = self.wh.read_version(self.name)
            if current is not None:
                holder = _holder(current[0])
                if float(holder.get("expires_at", 0)) < time.time():  # its run died: take over, one winner
                    started = time.monotonic()
                    etag = self.wh.replace_if(self.name, self._body(), current[1])
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
            etag = self.wh.replace_if(self.name, self._body(), self.etag or "")
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
            self.wh.delete_if(self.name, self.etag)
        except OSError:
            pass  # it expires on its own; the next run waits at most one lease period


def _holder(body: bytes) -> dict[str, Any]:
    """A lease's content; an unreadable one counts as expired (it can then be taken over, by one run)."""
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
