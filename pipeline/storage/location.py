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
import errno
import functools
import json
import os
import posixpath
import random
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from pipeline.errors import ConfigError, PipelineError

LOCAL = "file"
S3 = "s3"
_ALIASES = {"s3": S3, "s3a": S3, "file": LOCAL, "local": LOCAL}
FETCH_CONCURRENCY = 64  # object GETs in flight per process
ATTEMPTS = 5  # tries of one object operation on a transient error (each try is itself one botocore call)
BACKOFF_CAP = 2.0  # seconds: the longest pause between two tries


class StorageFailure(PipelineError, OSError):
    """An object operation that still failed after its retries: says which operation, which object, and why.

    An ``OSError`` too (errno EIO), so code that treats I/O errors as "this file / this step
    failed" keeps doing so; a ``PipelineError``, so the CLI prints its one line as it is.
    """

    def __init__(self, operation: str, url: str, cause: BaseException, attempts: int = 1) -> None:
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        self.operation, self.url, self.reason = operation, url, error_words(cause)
        super().__init__(errno.EIO, f"{operation} {url} failed{tries}: {self.reason}")
        self.transient = transient(cause)

    def __str__(self) -> str:
        return str(self.strerror)


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
        return self.get(rel).data

    def get(self, rel: str, if_match: str | None = None) -> Fetched:
        """Object stores: one whole object and its ETag, retried (body included) on transient errors.

        ``if_match``: only that version (an ETag), else ``PreconditionFailed`` (an ``OSError``).
        """
        fs = self.fs()
        url = self.join(rel)
        return _sync(fs, _retry(lambda: _get(fs, self.bucket, self.key(rel), None, if_match), "GET", url))  # type: ignore[no-any-return]

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
            self._retried("HEAD", rel, "head_object", Key=self.key(rel))
            return True
        except FileNotFoundError:
            return False

    def fetch_many(
        self, rels: list[str], max_bytes: int, etags: list[str | None] | None = None
    ) -> list[bytes | BaseException]:
        """Bytes of many objects, fetched concurrently; each at most ``max_bytes + 1`` bytes (to detect too large).

        Bodies cut short, resets and throttling are retried; what still fails is a clean
        ``StorageFailure`` for that object alone. With ``etags`` (the listing's), each object is
        read as the listed version or, if it was replaced since, as the newer version, whole.
        """
        return [f.data if isinstance(f, Fetched) else f for f in self.fetch_objects(rels, max_bytes, etags)]

    def fetch_objects(
        self, rels: list[str], max_bytes: int, etags: list[str | None] | None = None
    ) -> list[Fetched | BaseException]:
        """``fetch_many`` with each result's ETag: a caller records the version it actually read."""
        fs = self.fs()
        tags: list[str | None] = list(etags) if etags is not None else [None] * len(rels)
        return _sync(fs, _fetch_all(fs, self, rels, tags, max_bytes))  # type: ignore[no-any-return]

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
            page = self._retried("LIST", prefix[len(self.key("")) :], "list_objects_v2", **kwargs)
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
        self._retried("PUT", rel, "put_object", Key=self.key(rel), Body=data)

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
            self._retried("PUT (create-only)", rel, "put_object", Key=self.key(rel), Body=data, IfNoneMatch="*")
        except OSError as exc:
            if not (isinstance(exc, FileExistsError) or _precondition_failed(exc)):
                raise
            return self._holds(rel, data) is not None  # a retry of our own applied PUT also gets 412
        return True

    def replace_if(self, rel: str, data: bytes, etag: str) -> str | None:
        """Object stores: replace ``rel`` only if its ETag is still ``etag``; the new ETag, or None if it changed.

        A 412 is settled by reading back: when the PUT was applied but its reply was lost, the
        retry finds the object changed, by us. ``data`` must be unique to the writer (a run id).
        """
        try:
            out = self._retried(
                "PUT (if unchanged)", rel, "put_object", Key=self.key(rel), Body=data, IfMatch=f'"{etag}"'
            )
        except OSError as exc:
            if not (isinstance(exc, (FileExistsError, FileNotFoundError)) or _precondition_failed(exc)):
                raise
            return self._holds(rel, data)
        return str(out.get("ETag", "")).strip('"')

    def delete_if(self, rel: str, etag: str) -> bool:
        """Object stores: delete ``rel`` only while its ETag is ``etag`` (never someone else's newer object)."""
        try:
            self._retried("DELETE (if unchanged)", rel, "delete_object", Key=self.key(rel), IfMatch=f'"{etag}"')
        except FileNotFoundError:
            return False
        except OSError as exc:
            if _precondition_failed(exc):
                return False
            raise
        return True

    def _holds(self, rel: str, data: bytes) -> str | None:
        """The ETag of ``rel`` when it holds exactly ``data`` (our own write), else None."""
        found = self.head(rel)
        return found[1] if found is not None and found[0] == data else None

    def head(self, rel: str) -> tuple[bytes, str] | None:
        """Object stores: (bytes, ETag) of a small object, or None when missing."""
        try:
            got = self.get(rel)
        except FileNotFoundError:
            return None
        return got.data, got.etag or ""

    def _retried(self, operation: str, rel: str, method: str, **kwargs: Any) -> Any:
        """One raw S3 call, tried again on transient errors; a final failure names the operation and object."""
        fs = self.fs()

        async def call() -> Any:
            return await fs._call_s3(method, Bucket=self.bucket, **kwargs)

        return _sync(fs, _retry(call, operation, self.join(rel)))

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
            body = fh.read()
        self._retried("PUT", rel, "put_object", Key=self.key(rel), Body=body)

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
            objects = {"Objects": [{"Key": self.key(r)} for r in chunk], "Quiet": True}
            self._retried(f"DELETE ({len(chunk)} objects)", chunk[0], "delete_objects", Delete=objects)

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
    """An I/O error worth another try (a dropped connection, throttling, a body cut short, EIO on a network mount).

    A 412 (a condition did not hold) is an answer, not a failure; neither is a missing object.
    """
    flagged = getattr(exc, "transient", None)
    if isinstance(flagged, bool):
        return flagged
    if isinstance(exc, OSError):
        return not isinstance(exc, PERMANENT) and not _precondition_failed(exc)
    return _network_error(exc)


def _network_error(exc: BaseException) -> bool:
    """aiohttp and botocore errors that mean the connection or the reply failed (they are no OSError)."""
    try:
        import aiohttp
        import botocore.exceptions as bex
    except ImportError:  # pragma: no cover - s3fs brings both
        return False
    return isinstance(exc, (aiohttp.ClientError, bex.HTTPClientError, bex.ConnectionError, bex.ResponseStreamingError))


def error_words(exc: BaseException) -> str:
    """What went wrong, in words a user can act on: the HTTP status or the kind of failure, no library internals."""
    text = str(exc)
    for needle, words in (
        ("SlowDown", "HTTP 503 SlowDown (throttled)"),
        ("ServiceUnavailable", "HTTP 503 (service unavailable)"),
        ("InternalError", "HTTP 500 (internal error)"),
        ("AccessDenied", "HTTP 403 (access denied)"),
        ("Access Denied", "HTTP 403 (access denied)"),
        ("NoSuchBucket", "HTTP 404 (no such bucket)"),
    ):
        if needle in text:
            return words
    if type(exc).__name__ == "ClientPayloadError" or isinstance(exc, IncompleteBody):
        return "the reply was cut short"
    if _precondition_failed(exc):
        return "HTTP 412 (changed by someone else)"
    if isinstance(exc, FileNotFoundError):
        return "not found"
    if isinstance(exc, PermissionError):
        return "access denied"
    if isinstance(exc, TimeoutError) or "timeout" in type(exc).__name__.lower():
        return "timed out"
    if _network_error(exc) or isinstance(exc, ConnectionError):
        return "the connection failed"
    if isinstance(exc, OSError) and exc.strerror:
        return " ".join(str(exc.strerror).split())[:200]
    return type(exc).__name__


class IncompleteBody(OSError):
    """A reply body shorter than its Content-Length said: never taken for the whole object."""

    transient = True


def backoff(attempt: int) -> float:
    """Seconds to wait before try ``attempt + 1``: exponential from 0.1 s, capped, with full jitter."""
    return random.uniform(0, min(BACKOFF_CAP, 0.1 * 2**attempt))


async def _retry(call: Callable[[], Awaitable[Any]], operation: str, url: str) -> Any:
    """``call()`` until it succeeds, fails for good, or ``ATTEMPTS`` tries failed transiently."""
    for attempt in range(ATTEMPTS):
        try:
            return await call()
        except Exception as exc:
            if not transient(exc):
                raise
            if attempt == ATTEMPTS - 1:
                raise StorageFailure(operation, url, exc, ATTEMPTS) from exc
            await asyncio.sleep(backoff(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


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


async def _get(fs: Any, bucket: str, key: str, byte_range: str | None, if_match: str | None) -> Fetched:
    """One GET, its body read whole and checked against the length the server announced."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if byte_range:
        kwargs["Range"] = byte_range
    if if_match:
        kwargs["IfMatch"] = f'"{if_match}"'
    out = await fs._call_s3("get_object", **kwargs)
    async with out["Body"] as body:
        data: bytes = await body.read()
    expected = out.get("ContentLength")
    if isinstance(expected, int) and len(data) != expected:
        raise IncompleteBody(errno.EIO, f"got {len(data)} of {expected} bytes")
    return Fetched(data, str(out.get("ETag", "")).strip('"') or None)


def _empty_object(exc: BaseException) -> bool:
    return any(s in str(exc) for s in ("InvalidRange", "416", "range is not satisfiable"))


async def _fetch_one(fs: Any, loc: Location, rel: str, etag: str | None, max_bytes: int) -> Fetched | BaseException:
    """One listed object, as the listed version (``etag``) or, if it was replaced since, as its newer version.

    Never a mix: each result is one GET's whole body. A 412 means "changed since the listing":
    the object is read once more without the condition, and the result says so.
    """
    key, url, span = loc.key(rel), loc.join(rel), f"bytes=0-{max_bytes}"
    try:
        return await _retry(lambda: _get(fs, loc.bucket, key, span, etag), "GET", url)  # type: ignore[no-any-return]
    except Exception as exc:  # per-object outcome: the caller quarantines this file only
        if _empty_object(exc):
            return Fetched(b"", etag)  # a zero-byte object has no byte 0
        if etag is None or not _precondition_failed(exc):
            return _clean(exc, url)
    try:
        newer: Fetched = await _retry(lambda: _get(fs, loc.bucket, key, span, None), "GET", url)
        return Fetched(newer.data, newer.etag, changed=True)
    except Exception as exc:
        return Fetched(b"", None, changed=True) if _empty_object(exc) else _clean(exc, url)


def _clean(exc: BaseException, url: str) -> BaseException:
    """A per-object failure as one clean line (operation, object, reason); a missing object stays FileNotFoundError."""
    if isinstance(exc, (StorageFailure, FileNotFoundError, PermissionError)):
        return exc
    return StorageFailure("GET", url, exc)


async def _fetch_all(
    fs: Any, loc: Location, rels: list[str], etags: list[str | None], max_bytes: int
) -> list[Fetched | BaseException]:
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def one(rel: str, etag: str | None) -> Fetched | BaseException:
        async with gate:
            return await _fetch_one(fs, loc, rel, etag, max_bytes)

    return list(await asyncio.gather(*(one(r, e) for r, e in zip(rels, etags, strict=True))))


def relpath_ok(rel: str) -> bool:
    """An object key (relative to its root) that names a file the same way on every tool.

    Empty, '.' and '..' segments are refused: s3fs, DuckDB and local paths would resolve them
    to another name (possibly outside the seeds prefix), so such a key is never read.
    """
    return bool(rel) and all(part not in ("", ".", "..") for part in rel.split("/")) and posixpath.normpath(rel) == rel
