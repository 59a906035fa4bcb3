"""An object-store prefix (``s3://bucket/prefix``) as a ``Location``, through s3fs.

Raw S3 calls where exactness matters: object keys are passed as keys, never re-parsed as
paths (s3fs would read ``?versionId=`` in a key as a version, and collapse ``//``), and
create-only writes are conditional PUTs (``If-None-Match: *``). Endpoint and credentials come
from the standard AWS environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``); extra s3fs options from ``storage_options``.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, ClassVar

from pipeline.storage.failures import IncompleteBody, StorageFailure, precondition_failed, retry
from pipeline.storage.local import LocalFolder
from pipeline.storage.location import S3, Entry, Fetched, Location

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from pipeline.storage.lease import WriterLock

FETCH_CONCURRENCY = 64  # object GETs in flight per process
LEASE = ".lease.json"  # the writer lease of writer_lock, at the prefix's top


@dataclass(frozen=True)
class ObjectPrefix(Location):
    """``s3://bucket/prefix`` (``root`` is ``bucket`` or ``bucket/prefix``, no slashes at either end)."""

    protocol: ClassVar[str] = S3
    slow_to_open: ClassVar[bool] = True

    @property
    def url(self) -> str:
        return f"s3://{self.root}"

    def join(self, rel: str) -> str:
        return f"s3://{self.root}/{rel}"

    def child(self, rel: str) -> ObjectPrefix:
        return ObjectPrefix(f"{self.root}/{rel.strip('/')}", self.options_json)

    # --- plumbing ----------------------------------------------------------------------------
    @property
    def bucket(self) -> str:
        return self.root.split("/", 1)[0]

    def key(self, rel: str) -> str:
        prefix = self.root.partition("/")[2]
        return f"{prefix}/{rel}" if prefix else rel

    def fs(self) -> Any:
        """The process-wide s3fs client for these options."""
        return _s3(self.options_json)

    def reader_fs(self) -> Any:
        """A fresh s3fs client whose listing cache holds every object under this location (one LIST per
        thousand keys), so DuckDB and pyarrow open files without a HEAD request each. For reading what
        exists now: objects written later are not in its cache."""
        fs = _new_s3(self.options_json)
        fs.find(self.root)
        return fs

    def _retried(self, operation: str, rel: str, method: str, **kwargs: Any) -> Any:
        """One raw S3 call, tried again on transient errors; a final failure names the operation and object."""
        fs = self.fs()

        async def call() -> Any:
            return await fs._call_s3(method, Bucket=self.bucket, **kwargs)

        return _sync(fs, retry(call, operation, self.join(rel)))

    # --- reading -------------------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes:
        return self.get(rel).data

    def get(self, rel: str, if_match: str | None = None) -> Fetched:
        """One whole object and its ETag, retried (body included) on transient errors.

        ``if_match``: only that version (an ETag), else ``PreconditionFailed`` (an ``OSError``).
        """
        fs = self.fs()
        call = lambda: _get(fs, self.bucket, self.key(rel), None, if_match)
        return _sync(fs, retry(call, "GET", self.join(rel)))  # type: ignore[no-any-return]

    def read_version(self, rel: str) -> tuple[bytes, str] | None:
        """(bytes, ETag) of a small object, read whole with one GET; None when missing."""
        try:
            got = self.get(rel)
        except FileNotFoundError:
            return None
        return got.data, got.etag or ""

    def exists(self, rel: str) -> bool:
        try:
            self._retried("HEAD", rel, "head_object", Key=self.key(rel))
            return True
        except FileNotFoundError:
            return False

    def fetch_objects(
        self, rels: list[str], max_bytes: int, etags: list[str | None] | None = None
    ) -> list[Fetched | BaseException]:
        """Fetched concurrently. Bodies cut short, resets and throttling are retried; what still fails is a
        clean ``StorageFailure`` for that object alone. With ``etags`` (the listing's), each object is read
        as the listed version or, if it was replaced since, as the newer version, whole."""
        fs = self.fs()
        tags: list[str | None] = list(etags) if etags is not None else [None] * len(rels)
        return _sync(fs, _fetch_all(fs, self, rels, tags, max_bytes))  # type: ignore[no-any-return]

    def list_files(self, rel: str = "") -> list[Entry]:
        prefix = self.key(rel.rstrip("/") + "/") if rel else self.key("")
        return [
            Entry(key[len(self.key("")) :], size, mtime, etag)
            for key, size, mtime, etag in self.list_keys(prefix)
            if key.startswith(self.key(""))
        ]

    def list_names(self, rel: str) -> list[str]:
        prefix = self.key(rel.rstrip("/") + "/") if rel else self.key("")
        return [key[len(prefix) :].rstrip("/") for key, *_ in self.list_keys(prefix, delimiter="/")]

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

    def read_parquet(self, urls: list[str], columns: list[str] | None = None) -> pa.Table:
        import pyarrow.parquet as pq

        keys = [u.removeprefix("s3://") for u in urls]
        return pq.read_table(keys, columns=columns, filesystem=self.reader_fs())

    def open_read(self, rel: str) -> Any:
        return self.fs().open(f"{self.bucket}/{self.key(rel)}", "rb")

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        con.register_filesystem(self.reader_fs())

    def local_copy(self, rel: str, scratch: Location) -> str | None:
        try:
            data = self.read_bytes(rel)
        except FileNotFoundError:
            return None
        path = scratch.fresh_path("copy-" + rel.replace("/", "_"))
        with open(path, "wb") as fh:
            fh.write(data)
        return path

    def delta_options(self) -> dict[str, str]:
        """The same endpoint and keys s3fs uses: the standard AWS variables (object_store reads them too),
        and ``--storage-option`` values in s3fs spelling (key, secret, token, endpoint_url, region)."""
        return _delta_options(self.options)

    # --- writing ---------------------------------------------------------------------------------
    def makedirs(self, rel: str) -> None:
        """Object stores have no folders."""

    def write_bytes(self, rel: str, data: bytes) -> None:
        """One PUT."""
        self._retried("PUT", rel, "put_object", Key=self.key(rel), Body=data)

    def create_only(self, rel: str, data: bytes) -> bool:
        """A conditional PUT (``If-None-Match: *``), which the store decides; a lost race is HTTP 412
        (moto: FileExistsError, SeaweedFS: OSError). A retry of our own applied PUT also gets 412:
        settled by reading the object back."""
        try:
            self._retried("PUT (create-only)", rel, "put_object", Key=self.key(rel), Body=data, IfNoneMatch="*")
        except OSError as exc:
            if not (isinstance(exc, FileExistsError) or precondition_failed(exc)):
                raise
            return self._holds(rel, data) is not None
        return True

    def replace_if(self, rel: str, data: bytes, etag: str) -> str | None:
        """Replace ``rel`` only if its ETag is still ``etag``; the new ETag, or None if it changed.

        A 412 is settled by reading back: when the PUT was applied but its reply was lost, the
        retry finds the object changed, by us. ``data`` must be unique to the writer (a run id).
        """
        try:
            out = self._retried(
                "PUT (if unchanged)", rel, "put_object", Key=self.key(rel), Body=data, IfMatch=f'"{etag}"'
            )
        except OSError as exc:
            if not (isinstance(exc, (FileExistsError, FileNotFoundError)) or precondition_failed(exc)):
                raise
            return self._holds(rel, data)
        return str(out.get("ETag", "")).strip('"')

    def delete_if(self, rel: str, etag: str) -> bool:
        """Delete ``rel`` only while its ETag is ``etag`` (never someone else's newer object)."""
        try:
            self._retried("DELETE (if unchanged)", rel, "delete_object", Key=self.key(rel), IfMatch=f'"{etag}"')
        except FileNotFoundError:
            return False
        except OSError as exc:
            if precondition_failed(exc):
                return False
            raise
        return True

    def _holds(self, rel: str, data: bytes) -> str | None:
        """The ETag of ``rel`` when it holds exactly ``data`` (our own write), else None."""
        found = self.read_version(rel)
        return found[1] if found is not None and found[0] == data else None

    def open_write(self, rel: str) -> IO[bytes]:
        """A multipart upload that becomes the object when closed."""
        return self.fs().open(f"{self.bucket}/{self.key(rel)}", "wb")  # type: ignore[no-any-return]

    def put_file(self, local_path: str, rel: str) -> None:
        """One PUT of the file's bytes; the local file is removed after."""
        with open(local_path, "rb") as fh:
            body = fh.read()
        self._retried("PUT", rel, "put_object", Key=self.key(rel), Body=body)
        os.unlink(local_path)

    def delete(self, rels: list[str]) -> None:
        """Batched DELETEs, a thousand keys each; a folder-like name removes nothing (use ``delete_tree``)."""
        for i in range(0, len(rels), 1000):
            chunk = rels[i : i + 1000]
            objects = {"Objects": [{"Key": self.key(r)} for r in chunk], "Quiet": True}
            self._retried(f"DELETE ({len(chunk)} objects)", chunk[0], "delete_objects", Delete=objects)

    def delete_tree(self, rel: str) -> None:
        self.delete([e.rel for e in self.list_files(rel)])

    # --- links: object stores have none; readers take the newest commit -------------------------
    def link_tree(self, rel: str, folders: dict[str, dict[str, str]], scratch: Location) -> None:
        """Nothing: a copy per snapshot would cost what the data costs."""

    def point_link(self, rel: str, target: str) -> None:
        """Nothing."""

    def link_target(self, rel: str) -> str | None:
        return None

    # --- one writer at a time ---------------------------------------------------------------------
    def writer_lock(self, run_id: str, wait_seconds: float, lease_seconds: float) -> WriterLock:
        """An expiring lease in ``.lease.json``, taken and renewed with conditional PUTs."""
        from pipeline.storage.lease import Lease

        lease = Lease(self, LEASE, run_id, lease_seconds)
        lease.acquire(wait_seconds)
        return lease

    # --- scratch ----------------------------------------------------------------------------------
    def scratch(self) -> LocalFolder:
        """A folder in the system's temporary directory, named for this prefix (the same on every call)."""
        tag = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        folder = LocalFolder(os.path.join(tempfile.gettempdir(), f"pipeline-scratch-{tag}"))
        folder.makedirs("")
        return folder


def _delta_options(given: dict[str, Any]) -> dict[str, str]:
    endpoint = (
        given.get("endpoint_url")
        or (given.get("client_kwargs") or {}).get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    region = (
        given.get("region")
        or (given.get("client_kwargs") or {}).get("region_name")
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
    )
    out: dict[str, str] = {}
    for ours, theirs in (
        ("key", "AWS_ACCESS_KEY_ID"),
        ("secret", "AWS_SECRET_ACCESS_KEY"),
        ("token", "AWS_SESSION_TOKEN"),
    ):
        if given.get(ours):
            out[theirs] = str(given[ours])
    if endpoint:
        out["AWS_ENDPOINT_URL"] = str(endpoint)
        if str(endpoint).startswith("http://"):
            out["AWS_ALLOW_HTTP"] = "true"
    if region:
        out["AWS_REGION"] = str(region)
    return out


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


async def _fetch_one(fs: Any, loc: ObjectPrefix, rel: str, etag: str | None, max_bytes: int) -> Fetched | BaseException:
    """One listed object, as the listed version (``etag``) or, if it was replaced since, as its newer version.

    Never a mix: each result is one GET's whole body. A 412 means "changed since the listing":
    the object is read once more without the condition, and the result says so.
    """
    key, url, span = loc.key(rel), loc.join(rel), f"bytes=0-{max_bytes}"
    try:
        return await retry(lambda: _get(fs, loc.bucket, key, span, etag), "GET", url)  # type: ignore[no-any-return]
    except Exception as exc:  # per-object outcome: the caller quarantines this file only
        if _empty_object(exc):
            return Fetched(b"", etag)  # a zero-byte object has no byte 0
        if etag is None or not precondition_failed(exc):
            return _clean(exc, url)
    try:
        newer: Fetched = await retry(lambda: _get(fs, loc.bucket, key, span, None), "GET", url)
        return Fetched(newer.data, newer.etag, changed=True)
    except Exception as exc:
        return Fetched(b"", None, changed=True) if _empty_object(exc) else _clean(exc, url)


def _clean(exc: BaseException, url: str) -> BaseException:
    """A per-object failure as one clean line (operation, object, reason); a missing object stays FileNotFoundError."""
    if isinstance(exc, (StorageFailure, FileNotFoundError, PermissionError)):
        return exc
    return StorageFailure("GET", url, exc)


async def _fetch_all(
    fs: Any, loc: ObjectPrefix, rels: list[str], etags: list[str | None], max_bytes: int
) -> list[Fetched | BaseException]:
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def one(rel: str, etag: str | None) -> Fetched | BaseException:
        async with gate:
            return await _fetch_one(fs, loc, rel, etag, max_bytes)

    return list(await asyncio.gather(*(one(r, e) for r, e in zip(rels, etags, strict=True))))
