"""Fault injection for tests, in one place: each named point does nothing unless its variable is set.

Tests import the names below rather than spelling the variables, so a renamed point
fails loudly. None of these is a setting: they exist so that crash safety, crash
isolation and listing failures are tested against real processes and real storage.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time

KILL_AT = "PIPELINE_FAULT_KILL_AT"  # SIGKILL this process at the named point (see KILL_POINTS)
SLEEP_HOLDING_LOCK = "PIPELINE_FAULT_SLEEP_SECONDS"  # hold the writer lock this long (overlap tests)
CRASH_ON = "PIPELINE_FAULT_CRASH_ON"  # a parser process dies (SIGSEGV) on files whose path contains this
FAIL_AT = "PIPELINE_FAULT_FAIL_AT"  # raise an error at the start of the named stage (failure paths)
LIST_ERROR = "PIPELINE_FAULT_LIST_ERROR"  # listing this folder/prefix ('sub/', or '' for the root) fails;
# 'sub/@2' fails only the first two attempts in a process (a transient error)

KILL_POINTS = (
    "after_articles",
    "after_article_topics",
    "after_article_images",
    "after_related_articles",
    "after_related_article_images",
    "before_commit",
    "after_commit",  # committed, Delta logs not yet updated
    "after_delta",  # Delta logs updated, catalog and current not yet
)

WORKER_KILL_POINTS = ("in_merge",)  # SIGKILL the worker process doing the merges (its first month files written)

_attempts: dict[str, int] = {}
_attempts_lock = threading.Lock()


def kill_at(name: str) -> None:
    if os.environ.get(KILL_AT) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def fail_at(stage: str) -> None:
    if os.environ.get(FAIL_AT) == stage:
        from pipeline.errors import PipelineError

        raise PipelineError(f"injected failure at stage {stage} ({FAIL_AT})")


def sleep_holding_lock() -> None:
    if os.environ.get(SLEEP_HOLDING_LOCK):
        time.sleep(float(os.environ[SLEEP_HOLDING_LOCK]))


def crash_on(rel: str) -> None:
    marker = os.environ.get(CRASH_ON)
    if marker and marker in rel:
        os.kill(os.getpid(), signal.SIGSEGV)


def list_error(prefix: str) -> None:
    spec = os.environ.get(LIST_ERROR)
    if spec is None:
        return
    target, _, times = spec.partition("@")
    if target != prefix:
        return
    if not times:  # permanent, like a folder without read permission
        raise PermissionError(errno.EACCES, f"injected listing error on {prefix or 'the root'!r}")
    with _attempts_lock:
        _attempts[prefix] = _attempts.get(prefix, 0) + 1
        if _attempts[prefix] > int(times):
            return
    raise OSError(errno.EIO, f"injected transient listing error on {prefix or 'the root'!r}")
