"""Local seed folders, read the race-safe way: a listing that sees links as links, and a read that
never follows a link, blocks on a FIFO or reads past a cap, whatever a path became after listing.

The rules about what such a file means (refused, quarantined, retried) live in ``pipeline/read``;
this module only answers what is on disk, with ``Replaced`` and ``TooLarge`` when the answer is "not that".
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from stat import S_ISREG

from pipeline.storage.failures import Replaced, TooLarge

# No O_CREAT: a reader never makes a file. O_NOFOLLOW: a link swapped in is not followed.
# O_NONBLOCK: opening a FIFO (or a device) swapped in never waits for a writer.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_LINK_ERRNOS = (errno.ELOOP, errno.ENOTDIR, errno.EMLINK)


def real_path(path: str) -> str:
    """``path`` with every link resolved (a listing and its reads resolve the root the same way)."""
    return os.path.realpath(path)


PlainScan = Callable[
    [bytes, bytes, "tuple[bytes, ...] | None"], tuple[int, bytes, bytes, bytes, bytes, list[bytes], list[bytes]]
]
scan_plain: PlainScan | None
try:  # one folder's plain files in C (_listing.c: readdir + one lstat each); absent where it was not built
    from pipeline.storage._listing import scan as scan_plain
except ImportError:  # pragma: no cover - every machine of this project builds it
    scan_plain = None


def lstat(path: str) -> os.stat_result:
    """The entry itself: a link is not followed."""
    return os.lstat(path)


def scan(folder: str) -> list[os.DirEntry[str]]:
    """One folder's entries (links are entries, not followed)."""
    with os.scandir(folder) as it:
        return list(it)


def link_inside(path: str, real_root: str) -> str | None:
    """Where the link ``path`` resolves to, if that is inside ``real_root``; None when it points outside."""
    target = os.path.realpath(path)
    return target if os.path.commonpath([target, real_root]) == real_root else None


def stat_target(path: str) -> os.stat_result:
    """The file a resolved link names."""
    return os.stat(path)


def _open_beneath(real_root: str, parts: list[str]) -> int:
    """Open ``real_root/part/.../part`` one component at a time, never following a link.

    O_NOFOLLOW alone guards only the last component; walking with ``dir_fd`` also refuses a
    folder on the way that was replaced by a link (ELOOP or ENOTDIR).
    """
    fd = os.open(real_root, _DIR_FLAGS)
    try:
        for part in parts[:-1]:
            inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)


def _open_seed(real_root: str, os_rel: str, linked: bool) -> int:
    """A descriptor of the file now at ``os_rel``; a link is followed only if the listing saw a link
    there (``linked``) and it still resolves inside the root."""
    try:
        return _open_beneath(real_root, os_rel.split("/"))
    except OSError as exc:
        if exc.errno not in _LINK_ERRNOS:
            raise
        if not linked:
            raise Replaced("a symbolic link took its place (or a folder on its path)") from None
    target = os.path.realpath(os.path.join(real_root, os_rel))
    if os.path.commonpath([target, real_root]) != real_root or target == real_root:
        raise Replaced("its symbolic link now points outside the seeds folder") from None
    try:
        return _open_beneath(real_root, os.path.relpath(target, real_root).split(os.sep))
    except OSError as exc:
        if exc.errno in _LINK_ERRNOS:
            raise Replaced("its symbolic link's target was replaced by another link") from None
        raise


def read_capped(real_root: str, os_rel: str, linked: bool, max_bytes: int) -> bytes:
    """Open without following links or blocking, ``fstat`` the descriptor, and read from it only a
    regular file within the cap. Whatever the path became after the listing, this returns or raises at once.

    ``os.read`` sized by ``fstat``, not a buffered ``read(max_bytes + 1)``: that allocates the whole
    cap (1 MiB by default) for every file and shrinks it after, ~12 µs of a ~2 KB seed's ~13 µs read.
    A file that grows after the ``fstat`` is read on until its end or past the cap, as before.
    """
    fd = _open_seed(real_root, os_rel, linked)
    try:
        st = os.fstat(fd)
        if not S_ISREG(st.st_mode):
            raise Replaced("it became a FIFO, device, socket or folder")
        if st.st_size > max_bytes:
            raise TooLarge(max_bytes)
        data = _read_to_end(fd, st.st_size + 1, max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise TooLarge(max_bytes)  # it grew while being read
    return data


def _read_to_end(fd: int, first: int, limit: int) -> bytes:
    """Bytes from ``fd`` until its end or ``limit``, asking for ``first`` bytes first (the end is then
    usually the next, empty, read)."""
    parts: list[bytes] = []
    total = 0
    want = first
    while total < limit:
        chunk = os.read(fd, want)
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
        want = limit - total
    return parts[0] if len(parts) == 1 else b"".join(parts)


class Checkpoint:
    """An 8-byte counter in a local temporary file that outlives the process writing it: a crash-isolated
    worker marks the item it is on, and its parent reads the mark after the worker died."""

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def create(cls, prefix: str) -> Checkpoint:
        fd, path = tempfile.mkstemp(prefix=prefix)
        os.close(fd)
        return cls(path)

    def reset(self) -> None:
        with open(self.path, "wb") as fh:
            fh.write((-1).to_bytes(8, "little", signed=True))

    def read(self) -> int:
        with open(self.path, "rb") as fh:
            return int.from_bytes(fh.read(8), "little", signed=True)

    def remove(self) -> None:
        os.unlink(self.path)


class Marker:
    """The worker's side of a ``Checkpoint`` (by path): one positioned write per item, no buffering."""

    def __init__(self, path: str | None) -> None:
        self._fd = os.open(path, os.O_WRONLY) if path else None

    def mark(self, i: int) -> None:
        if self._fd is not None:
            os.pwrite(self._fd, i.to_bytes(8, "little"), 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
