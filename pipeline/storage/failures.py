"""Storage errors in words a user can act on, and the one retry policy every backend uses."""

from __future__ import annotations

import asyncio
import errno
import random
from collections.abc import Awaitable, Callable
from typing import Any

from pipeline.errors import PipelineError

ATTEMPTS = 5  # tries of one object operation on a transient error (each try is itself one botocore call)
BACKOFF_CAP = 2.0  # seconds: the longest pause between two tries
PERMANENT = (PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


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


class IncompleteBody(OSError):
    """A reply body shorter than its Content-Length said: never taken for the whole object."""

    transient = True


def transient(exc: BaseException) -> bool:
    """An I/O error worth another try (a dropped connection, throttling, a body cut short, EIO on a network mount).

    A 412 (a condition did not hold) is an answer, not a failure; neither is a missing object.
    """
    flagged = getattr(exc, "transient", None)
    if isinstance(flagged, bool):
        return flagged
    if isinstance(exc, OSError):
        return not isinstance(exc, PERMANENT) and not precondition_failed(exc)
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
    if precondition_failed(exc):
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


def precondition_failed(exc: BaseException) -> bool:
    """An HTTP 412: the object was not in the state a conditional request named (moto, AWS, SeaweedFS spellings)."""
    text = str(exc)
    return any(s in text for s in ("pre-condition", "PreconditionFailed", "412", "ConditionalRequestConflict"))


def backoff(attempt: int) -> float:
    """Seconds to wait before try ``attempt + 1``: exponential from 0.1 s, capped, with full jitter."""
    return random.uniform(0, min(BACKOFF_CAP, 0.1 * 2**attempt))


async def retry(call: Callable[[], Awaitable[Any]], operation: str, url: str) -> Any:
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


class Replaced(OSError):
    """A local file that is no longer what its listing saw (a link, FIFO or folder took its place): not read."""

    def __init__(self, what: str) -> None:
        super().__init__(errno.ESTALE, what)
        self.what = what


class TooLarge(OSError):
    """A file larger than the cap a caller read it with: refused whole, never truncated."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(errno.EFBIG, f"larger than {max_bytes} bytes")
        self.max_bytes = max_bytes
