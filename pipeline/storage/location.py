"""Where data lives: a local folder or an object-store prefix (``s3://bucket/prefix``), behind one interface.

``Location`` is that interface: listing, whole and ranged reads, atomic and create-only writes,
deletes, the writer lock, and what readers such as DuckDB and pyarrow need to open files. Two
implementations: ``LocalFolder`` (``pipeline/storage/local.py``: the ``os`` fast paths, hard
links, flock) and ``ObjectPrefix`` (``pipeline/storage/objects.py``: s3fs, conditional PUTs, an
expiring lease). Code above this package asks a location to do something and never asks which
kind it is; what only one kind can do (links for direct Parquet readers) is a no-op on the other.

A ``Location`` is small, frozen and picklable, so it travels to worker processes and Dask
workers; each process opens (and caches) its own client.
"""

from __future__ import annotations

import json
import os
import posixpath
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, ClassVar

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from pipeline.storage.lease import WriterLock

LOCAL = "file"
S3 = "s3"
_ALIASES = {"s3": S3, "s3a": S3, "file": LOCAL, "local": LOCAL}


@dataclass(frozen=True)
class Fetched:
    """One object's bytes as read, and the ETag of the version they are (it may differ from the listing's)."""

    data: bytes
    etag: str | None
    changed: bool = False  # the object was replaced after it was listed: this is the newer version


@dataclass(frozen=True)
class Entry:
    """One listed file or object."""

    rel: str  # relative to the listed root, '/'-separated, exactly as stored
    size: int
    mtime_ns: int
    etag: str | None = None  # object stores: content tag (unchanged tag = unchanged bytes)


@dataclass(frozen=True)
class Location(ABC):
    """A place files live; ``Location.parse`` turns what a user writes into the right kind."""

    protocol: ClassVar[str]
    root: str  # local: absolute path; s3: "bucket" or "bucket/prefix" (no slashes at either end)
    options_json: str = "{}"  # extra storage options, canonical JSON (hashable and picklable)

    # --- construction and names -------------------------------------------------------
    @staticmethod
    def parse(text: str, options: dict[str, Any] | None = None) -> Location:
        """A path or URL as a user writes it (relative paths resolve against the working directory)."""
        from pipeline.storage.local import LocalFolder
        from pipeline.storage.objects import ObjectPrefix

        if not text or not text.strip():
            raise ConfigError("an empty path is not a location")
        scheme, sep, rest = text.partition("://")
        if not sep:
            return LocalFolder(os.path.abspath(text))
        protocol = _ALIASES.get(scheme.lower())
        if protocol is None:
            raise ConfigError(f"unsupported storage URL {text!r}: use a local path, file:///path or s3://bucket/prefix")
        if protocol == LOCAL:
            return LocalFolder(os.path.abspath(rest or "/"))
        root = rest.rstrip("/")
        if not root or root.startswith((".", "/")):
            raise ConfigError(f"{text!r} names no bucket: use s3://bucket/prefix")
        parts = root.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ConfigError(f"{text!r}: a prefix must not contain empty, '.' or '..' segments")
        return ObjectPrefix(root, json.dumps(options or {}, sort_keys=True))

    @property
    def local(self) -> bool:
        """Seeds only: a local folder is walked and read with the reader's link and FIFO rules."""
        return self.protocol == LOCAL

    @property
    def options(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.options_json)
        return value

    @property
    @abstractmethod
    def url(self) -> str:
        """What a user would write: the local path, or ``s3://bucket/prefix``."""

    @abstractmethod
    def join(self, rel: str) -> str:
        """Full path (local) or URL (object store) of ``rel`` under this location, for readers like DuckDB."""

    @abstractmethod
    def child(self, rel: str) -> Location:
        """The location ``rel`` under this one."""

    def contains(self, other: Location) -> bool:
        """True when ``other`` is this location or lies inside it."""
        if type(self) is not type(other):
            return False
        return other.root == self.root or other.root.startswith(self.root.rstrip("/") + "/")

    # --- reading ----------------------------------------------------------------------------
    @abstractmethod
    def read_bytes(self, rel: str) -> bytes:
        """The whole file; ``FileNotFoundError`` when it does not exist."""

    def read_text(self, rel: str) -> str | None:
        """A small text file, or None when it does not exist."""
        try:
            return self.read_bytes(rel).decode("utf-8")
        except FileNotFoundError:
            return None

    @abstractmethod
    def exists(self, rel: str) -> bool: ...

    @abstractmethod
    def list_files(self, rel: str = "") -> list[Entry]:
        """Every file under ``rel`` (recursive), with sizes; hidden and folder entries included as stored."""

    @abstractmethod
    def list_names(self, rel: str) -> list[str]:
        """Names directly inside folder ``rel`` (files and folders; none when it does not exist), one request."""

    def fetch_many(
        self, rels: list[str], max_bytes: int, etags: list[str | None] | None = None
    ) -> list[bytes | BaseException]:
        """Bytes of many files, each at most ``max_bytes + 1`` (enough to tell it is too large); per-file errors."""
        return [f.data if isinstance(f, Fetched) else f for f in self.fetch_objects(rels, max_bytes, etags)]

    @abstractmethod
    def fetch_objects(
        self, rels: list[str], max_bytes: int, etags: list[str | None] | None = None
    ) -> list[Fetched | BaseException]:
        """``fetch_many`` with each result's version tag: a caller records the version it actually read."""

    @abstractmethod
    def read_parquet(self, urls: list[str], columns: list[str] | None = None) -> pa.Table:
        """Parquet files (as ``join`` names them) as one Arrow table."""

    @abstractmethod
    def open_read(self, rel: str) -> Any:
        """A seekable binary file that pyarrow reads (footers, ranges) without reading it whole."""

    @abstractmethod
    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        """Let a DuckDB connection read the files ``join`` names."""

    @abstractmethod
    def local_copy(self, rel: str, scratch: Location) -> str | None:
        """A local path holding ``rel``'s bytes (the file itself, or a download into ``scratch``); None if missing."""

    @abstractmethod
    def delta_options(self) -> dict[str, str] | None:
        """delta-rs (object_store) storage options that reach the same files with the same credentials."""

    slow_to_open: ClassVar[bool]  # opening a file is a network round trip: read each once, not once per query

    # --- writing ----------------------------------------------------------------------------
    @abstractmethod
    def makedirs(self, rel: str) -> None:
        """Make folder ``rel`` (object stores have none: nothing to do)."""

    @abstractmethod
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` whole: readers see the old or the new bytes."""

    @abstractmethod
    def create_only(self, rel: str, data: bytes) -> bool:
        """Write ``rel`` only if it does not exist yet, atomically; False when it already exists."""

    @abstractmethod
    def open_write(self, rel: str) -> IO[bytes]:
        """A binary stream that becomes ``rel`` when closed."""

    @abstractmethod
    def put_file(self, local_path: str, rel: str) -> None:
        """Move a finished local file to ``rel``, replacing it whole (the local file is gone afterwards)."""

    @abstractmethod
    def delete(self, rels: list[str]) -> None:
        """Remove files or folders (missing ones are fine)."""

    @abstractmethod
    def delete_tree(self, rel: str) -> None:
        """Remove everything under ``rel``."""

    # --- links: what a local folder offers direct Parquet readers -------------------------------
    @abstractmethod
    def link_tree(self, rel: str, folders: dict[str, dict[str, str]], scratch: Location) -> None:
        """Folder ``rel`` of folders of hard links (folder -> {name: file under this location}), made whole
        in ``scratch`` and renamed into place; kept as it is when it exists. Object stores: nothing (no links)."""

    @abstractmethod
    def point_link(self, rel: str, target: str) -> None:
        """Point the symbolic link ``rel`` at ``target`` (relative to this location), atomically.
        Object stores: nothing."""

    @abstractmethod
    def link_target(self, rel: str) -> str | None:
        """The last name of what link ``rel`` points at; None when there is no such link (always, on object stores)."""

    # --- one writer at a time -------------------------------------------------------------------
    @abstractmethod
    def writer_lock(self, run_id: str, wait_seconds: float, lease_seconds: float) -> WriterLock:
        """Exclusive writer access to this location, or ``WarehouseLocked`` after ``wait_seconds``."""

    # --- run-private scratch space ----------------------------------------------------------------
    @abstractmethod
    def scratch(self) -> Location:
        """A local folder for this location's temporary files (catalog builds, snapshot trees), made if missing."""

    def fresh_path(self, name: str) -> str:
        """Local folders: the path of ``name`` in this folder with nothing there yet (a stale file is removed)."""
        raise NotImplementedError(f"{self.url} is not a local folder")


def relpath_ok(rel: str) -> bool:
    """An object key (relative to its root) that names a file the same way on every tool.

    Empty, '.' and '..' segments are refused: s3fs, DuckDB and local paths would resolve them
    to another name (possibly outside the seeds prefix), so such a key is never read.
    """
    return bool(rel) and all(part not in ("", ".", "..") for part in rel.split("/")) and posixpath.normpath(rel) == rel
