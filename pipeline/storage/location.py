"""Where data lives: a local folder or an object-store prefix (``s3://bucket/prefix``), one interface.

Local paths keep the ``os`` fast path (scandir, open, rename, hard links). Object stores go
through s3fs, using the raw S3 calls where exactness matters: object keys are passed as
keys, never re-parsed as paths (s3fs would read ``?versionId=`` in a key as a version, and
collapse ``//``), and create-only writes are conditional PUTs (``If-None-Match: *``).

A ``Location`` is small, frozen and picklable, so it travels to worker processes and Dask
workers; each process opens (and caches) its own client. Endpoint and credentials come
from the standard AWS environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``); extra s3fs options from ``storage_options``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import posixpath
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from pipeline.errors import ConfigError, PipelineError

LOCAL = "file"
S3 = "s3"
_ALIASES = {"s3": S3, "s3a": S3, "file": LOCAL, "local": LOCAL}
FETCH_CONCURRENCY = 64  # object GETs in flight per process


class StorageError(PipelineError):
    """Object storage refused or failed an operation the run cannot do without."""


@dataclass(frozen=True)
class Entry:
    """One listed file or object."""

    rel: str  # relative to the listed root, '/'-separated, exactly as stored
    size: int
    mtime_ns: int
    etag: str | None = None  # object stores: content tag (unchanged tag = unchanged bytes)


@dataclass(frozen=True)
class Location:
    """A local folder (``protocol == "file"``, absolute ``root``) or ``s3://bucket/prefix``."""

    protocol: str
    root: str  # local: absolute path; s3: "bucket" or "bucket/prefix" (no slashes at either end)
    options_json: str = "{}"  # extra storage options, canonical JSON (hashable and picklable)

    # --- construction -----------------------------------------------------------
    @classmethod
    def parse(cls, text: str, options: dict[str, Any] | None = None) -> Location:
        """A path or URL as a user writes it (relative paths resolve against the working directory)."""
        if not text or not text.strip():
            raise ConfigError("an empty path is not a location")
        scheme, sep, rest = text.partition("://")
        if not sep:
            return cls(LOCAL, os.path.abspath(text), "{}")
        protocol = _ALIASES.get(scheme.lower())
        if protocol is None:
            raise ConfigError(f"unsupported storage URL {text!r}: use a local path, file:///path or s3://bucket/prefix")
        if protocol == LOCAL:
            return cls(LOCAL, os.path.abspath(rest or "/"), "{}")
        root = rest.rstrip("/")
        if not root or root.startswith((".", "/")):
            raise ConfigError(f"{text!r} names no bucket: use s3://bucket/prefix")
        parts = root.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ConfigError(f"{text!r}: a prefix must not contain empty, '.' or '..' segments")
        return cls(S3, root, json.dumps(options or {}, sort_keys=True))

    @property
    def local(self) -> bool:
        return self.protocol == LOCAL

    @property
    def url(self) -> str:
        """What a user would write: the local path, or ``s3://bucket/prefix``."""
        return self.root if self.local else f"s3://{self.root}"

    @property
    def options(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.options_json)
        return value

    def join(self, rel: str) -> str:
        """Full path (local) or URL (object store) of ``rel`` under this location, for readers like DuckDB."""
        return os.path.join(self.root, rel) if self.local else f"s3://{self.root}/{rel}"

    def child(self, rel: str) -> Location:
        root = os.path.join(self.root, rel) if self.local else f"{self.root}/{rel.strip('/')}"
        return Location(self.protocol, root, self.options_json)

    def contains(self, other: Location) -> bool:
        """True when ``other`` is this location or lies inside it."""
        if self.protocol != other.protocol:
            return False
        if self.local:
            return os.path.commonpath([self.root, other.root]) == self.root
        return other.root == self.root or other.root.startswith(self.root + "/")

    # --- object-store plumbing ---------------------------------------------------
    @property
    def bucket(self) -> str:
        return self.root.split("/", 1)[0]

    def key(self, rel: str) -> str:
        prefix = self.root.partition("/")[2]
        return f"{prefix}/{rel}" if prefix else rel

    def fs(self) -> Any:
        """The process-wide s3fs client for these options (None on local disk)."""
        return None if self.local else _s3(self.options_json)

    def reader_fs(self) -> Any:
        """A fresh s3fs client whose listing cache holds every object under this location (one LIST per
        thousand keys), so DuckDB and pyarrow open files without a HEAD request each. For reading what
        exists now: objects written later are not in its cache."""
        fs = _new_s3(self.options_json)
        fs.find(self.root)
        return fs

    def _call(self, method: str, **kwargs: Any) -> Any:
        return self.fs().call_s3(method, Bucket=self.bucket, **kwargs)

    # --- reading --------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes:
        if self.local:
            with open(self.join(rel), "rb") as fh:
                return fh.read()
        response = self._call("get_object", Key=self.key(rel))
        return _sync(self.fs(), response["Body"].read())  # type: ignore[no-any-return]

    def read_text(self, rel: str) -> str | None:
        """A small text file, or None when it does not exist."""
        try:
            return self.read_bytes(rel).decode("utf-8")
        except FileNotFoundError:
            return None

    def exists(self, rel: str) -> bool:
        if self.local:
            return os.path.lexists(self.join(rel))
        try:
            self._call("head_object", Key=self.key(rel))
            return True
        except FileNotFoundError:
            return False

    def fetch_many(self, rels: list[str], max_bytes: int) -> list[bytes | BaseException]:
        """Bytes of many objects, fetched concurrently; each at most ``max_bytes + 1`` bytes (to detect too large)."""
        fs = self.fs()
        return _sync(fs, _fetch_all(fs, self.bucket, [self.key(r) for r in rels], max_bytes))  # type: ignore[no-any-return]

    def list_files(self, rel: str = "") -> list[Entry]:
        """Every file under ``rel`` (recursive), with sizes; hidden and folder entries included as stored."""
        if self.local:
            base = self.join(rel) if rel else self.root
            out = []
            for folder, _dirs, names in os.walk(base):
                for name in names:
                    path = os.path.join(folder, name)
                    try:
                        st = os.stat(path, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    out.append(Entry(os.path.relpath(path, self.root).replace(os.sep, "/"), st.st_size, st.st_mtime_ns))
            return out
        prefix = self.key(rel.rstrip("/") + "/") if rel else self.key("")
        return [
            Entry(key[len(self.key("")) :], size, mtime, etag)
            for key, size, mtime, etag in self.list_keys(prefix)
            if key.startswith(self.key(""))
        ]

    def list_keys(self, prefix: str, delimiter: str | None = None) -> Iterator[tuple[str, int, int, str | None]]:
        """Raw paginated listing: (key, size, mtime_ns, etag); with a delimiter, common prefixes come as size -1."""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": prefix}
            if delimiter:
                kwargs["Delimiter"] = delimiter
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list_objects_v2", **kwargs)
            for obj in page.get("Contents", []):
                yield obj["Key"], int(obj["Size"]), _ns(obj["LastModified"]), str(obj.get("ETag", "")).strip('"')
            for common in page.get("CommonPrefixes", []):
                yield common["Prefix"], -1, 0, None
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    # --- writing ----------------------------------------------------------------------
    def makedirs(self, rel: str) -> None:
        """Local folders; object stores have none."""
        if self.local:
            os.makedirs(self.join(rel), exist_ok=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` whole: readers see the old or the new bytes (rename locally, one PUT remotely)."""
        if self.local:
            path = self.join(rel)
            os.replace(_synced_copy(path, data), path)
            return
        self._call("put_object", Key=self.key(rel), Body=data)

    def create_only(self, rel: str, data: bytes) -> bool:
        """Write ``rel`` only if it does not exist yet, atomically; False when it already exists.

        Locally: write a temporary file, then ``link`` it into place (fails if the name exists;
        readers never see a partial file). Object stores: a conditional PUT (``If-None-Match: *``),
        which the store decides; a lost race is HTTP 412 (moto: FileExistsError, SeaweedFS: OSError).
        """
        if self.local:
            path = self.join(rel)
            tmp = _synced_copy(path, data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            fsync_dir(os.path.dirname(path))
            return True
        try:
            self._call("put_object", Key=self.key(rel), Body=data, IfNoneMatch="*")
        except FileExistsError:
            return False
        except OSError as exc:
            if _precondition_failed(exc):
                return False
            raise
        return True

    def replace_if(self, rel: str, data: bytes, etag: str) -> str | None:
        """Object stores: replace ``rel`` only if its ETag is still ``etag``; the new ETag, or None if it changed."""
        try:
            out = self._call("put_object", Key=self.key(rel), Body=data, IfMatch=f'"{etag}"')
        except (FileExistsError, FileNotFoundError):
            return None
        except OSError as exc:
            if _precondition_failed(exc):
                return None
            raise
        return str(out.get("ETag", "")).strip('"')

    def head(self, rel: str) -> tuple[bytes, str] | None:
        """Object stores: (bytes, ETag) of a small object, or None when missing."""
        try:
            out = self._call("get_object", Key=self.key(rel))
        except FileNotFoundError:
            return None
        return _sync(self.fs(), out["Body"].read()), str(out.get("ETag", "")).strip('"')

    def open_write(self, rel: str) -> IO[bytes]:
        """A binary stream that becomes ``rel`` when closed (local: written in place; remote: multipart upload)."""
        if self.local:
            path = self.join(rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            return open(path, "wb")
        return self.fs().open(f"{self.bucket}/{self.key(rel)}", "wb")  # type: ignore[no-any-return]

    def upload(self, local_path: str, rel: str) -> None:
        """Copy a local file to ``rel`` (replacing it whole)."""
        if self.local:
            target = self.join(rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = f"{target}.tmp-{os.getpid()}"
            shutil.copyfile(local_path, tmp)
            os.replace(tmp, target)
            return
        with open(local_path, "rb") as fh:
            self._call("put_object", Key=self.key(rel), Body=fh.read())

    def delete(self, rels: list[str]) -> None:
        """Remove files (missing ones are fine)."""
        if self.local:
            for rel in rels:
                path = self.join(rel)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
            return
        for i in range(0, len(rels), 1000):
            chunk = rels[i : i + 1000]
            self._call("delete_objects", Delete={"Objects": [{"Key": self.key(r)} for r in chunk], "Quiet": True})

    def delete_tree(self, rel: str) -> None:
        if self.local:
            shutil.rmtree(self.join(rel), ignore_errors=True)
        else:
            self.delete([e.rel for e in self.list_files(rel)])


def _synced_copy(path: str, data: bytes) -> str:
    """``data`` in a new file beside ``path``, on disk (fsync) before it is renamed or linked into place."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return tmp


PERMANENT = (PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


def transient(exc: BaseException) -> bool:
    """An I/O error worth another try (a dropped connection, throttling, EIO on a network mount)."""
    return isinstance(exc, OSError) and not isinstance(exc, PERMANENT)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _precondition_failed(exc: BaseException) -> bool:
    text = str(exc)
    return any(s in text for s in ("pre-condition", "PreconditionFailed", "412", "ConditionalRequestConflict"))


def _ns(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1_000_000) * 1000
    return 0


@functools.lru_cache(maxsize=8)
def _s3(options_json: str) -> Any:
    """One s3fs client per process and option set (for writes and raw calls)."""
    return _new_s3(options_json)


def _new_s3(options_json: str) -> Any:
    """An s3fs client; endpoint and keys from the AWS_* environment, extra options from ``options_json``."""
    import s3fs

    options = json.loads(options_json)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and "endpoint_url" not in options:
        options["endpoint_url"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options.setdefault("client_kwargs", {}).setdefault("region_name", region)
    options.setdefault("config_kwargs", {}).setdefault("retries", {"max_attempts": 5, "mode": "standard"})
    return s3fs.S3FileSystem(skip_instance_cache=True, **options)


def _sync(fs: Any, coro: Any) -> Any:
    from fsspec.asyn import sync

    async def run() -> Any:
        return await coro

    return sync(fs.loop, run)


async def _fetch_all(fs: Any, bucket: str, keys: list[str], max_bytes: int) -> list[bytes | BaseException]:
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def one(key: str) -> bytes | BaseException:
        async with gate:
            try:
                out = await fs._call_s3("get_object", Bucket=bucket, Key=key, Range=f"bytes=0-{max_bytes}")
                async with out["Body"] as body:
                    data: bytes = await body.read()
                return data
            except Exception as exc:  # per-object outcome: the caller quarantines this file only
                if any(s in str(exc) for s in ("InvalidRange", "416", "range is not satisfiable")):
                    return b""  # a zero-byte object has no byte 0
                return exc

    return list(await asyncio.gather(*(one(k) for k in keys)))


def relpath_ok(rel: str) -> bool:
    """An object key (relative to its root) that names a file the same way on every tool.

    Empty, '.' and '..' segments are refused: s3fs, DuckDB and local paths would resolve them
    to another name (possibly outside the seeds prefix), so such a key is never read.
    """
    return bool(rel) and all(part not in ("", ".", "..") for part in rel.split("/")) and posixpath.normpath(rel) == rel
