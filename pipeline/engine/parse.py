"""Parse batches of files in worker processes, writing rows straight to staging Parquet.

A batch is a ``BatchSpec``: small, frozen and picklable (paths, sizes, hashes, two
locations), so it can go to a local process or a Dask worker. Workers return only small
per-file outcomes; rows never travel back as Python objects (pickling dicts costs ~25%
of parse time). Objects in a bucket are fetched concurrently, a bounded slice at a time.

A worker that dies (libyaml can segfault on some inputs) takes down only its batch, which
then runs again in a fresh process that records, in a checkpoint file, which file it is
on: the file that kills it is quarantined as ``parser_crash`` and the rest runs on, so
each crash costs one process start and every other file still loads. On Dask, each
worker thread keeps one such child process, so a crash never kills the Dask worker.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import secrets
import select
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import faults, schema
from pipeline.errors import PipelineError
from pipeline.read.discover import raw_name
from pipeline.read.extract import Loaded, enable_fast_yaml, extract, read_seed, sha256
from pipeline.read.normalize import Source
from pipeline.read.problems import Problem, ProblemError
from pipeline.storage import seeds
from pipeline.storage.location import Location
from pipeline.storage.seeds import Checkpoint, Marker

T = TypeVar("T")

# Hidden staging columns: which file a row came from and its partition.
STAGING_EXTRA = [pa.field("_source", pa.string(), nullable=False), pa.field("_month", pa.string(), nullable=False)]
FETCH_SLICE_FILES = 128  # object-store reads: at most this many objects ...
FETCH_SLICE_BYTES = 64 * 1024 * 1024  # ... or bytes held in memory at once per batch


@dataclass(frozen=True)
class Job:
    rel: str  # shown path (``discover.shown_name``)
    size: int
    mtime_ns: int | None  # None: beyond int64 (``discover.mtime_or_none``)
    etag: str | None = None
    target: str | None = None  # local: discovery saw a symlink here, to a file inside the seeds folder
    old_sha: str | None = None  # content hash of the last loaded version, when known


@dataclass(frozen=True)
class BatchSpec:
    """Everything a worker needs for one batch; nothing here holds a handle, lock or client."""

    batch_no: int
    jobs: tuple[Job, ...]
    seeds: Location
    staging: Location  # folder (prefix) for this batch's staging Parquet
    run_id: str
    max_bytes: int
    checkpoint: str | None = None  # a local file the worker writes the index of the file it is on to


@dataclass
class Outcome:
    """What became of one file in this run."""

    rel: str
    size: int | None
    mtime_ns: int | None
    sha: str | None
    status: str  # loaded | rejected | unchanged
    etag: str | None = None
    article_id: str | None = None
    month: str | None = None
    problem: Problem | None = None
    unknown_keys: tuple[str, ...] = ()


@dataclass
class BatchResult:
    outcomes: list[Outcome]
    staging: dict[str, list[str]] = field(default_factory=dict)  # table -> staging file URLs/paths

    def extend(self, other: BatchResult) -> None:
        self.outcomes.extend(other.outcomes)
        for table, files in other.staging.items():
            self.staging.setdefault(table, []).extend(files)


def batch_size(total: int, workers: int, cap: int) -> int:
    """Files per batch: about four batches per worker (progress, crash isolation), at most ``cap``."""
    return max(1, min(cap, -(-total // (workers * 4))))


def staging_schema(table: schema.Table) -> pa.Schema:
    return pa.schema(list(table.arrow_schema()) + STAGING_EXTRA)


def _too_large(max_bytes: int) -> Problem:
    return Problem("too_large", f"file is larger than the {max_bytes:,}-byte cap (max_file_bytes)")


def _rejected(job: Job, problem: Problem, size: int | None = None, sha: str | None = None) -> Outcome:
    return Outcome(
        job.rel, job.size if size is None else size, job.mtime_ns, sha, "rejected", job.etag, problem=problem
    )


def process_file(job: Job, data: bytes | BaseException, run_id: str, max_bytes: int) -> tuple[Outcome, Loaded | None]:
    """Hash and (unless unchanged) parse one file's bytes (or the error reading them)."""
    if isinstance(data, ProblemError):
        return _rejected(job, data.problem), None
    if isinstance(data, BaseException):
        why = getattr(data, "strerror", None) or str(data) or type(data).__name__
        return _rejected(job, Problem("unreadable", f"cannot read file: {why}")), None
    if len(data) > max_bytes:
        return _rejected(job, _too_large(max_bytes)), None
    digest = sha256(data)
    if digest == job.old_sha:
        return Outcome(job.rel, len(data), job.mtime_ns, digest, "unchanged", job.etag), None
    faults.crash_on(job.rel)
    try:
        result: Loaded | Problem = extract(data, Source(job.rel, digest), run_id)
    except Exception as exc:  # a bug on one odd file must not stop the others
        result = Problem(
            "unexpected_error",
            f"the pipeline failed on this file ({type(exc).__name__}: {exc}); please report it with the file",
        )
    if isinstance(result, Problem):
        return _rejected(job, result, len(data), digest), None
    outcome = Outcome(
        job.rel,
        len(data),
        job.mtime_ns,
        digest,
        "loaded",
        job.etag,
        article_id=result.rows.article_id,
        month=result.rows.month,
        unknown_keys=tuple(sorted(result.unknown_keys)),
    )
    return outcome, result


def _read_local(spec: BatchSpec, job: Job, real_root: str) -> bytes | BaseException:
    """The file's bytes, or why not: any error about this one file becomes its reject row."""
    if job.size > spec.max_bytes:
        return ProblemError(_too_large(spec.max_bytes))
    try:
        return read_seed(real_root, raw_name(job.rel), job.target is not None, spec.max_bytes)
    except (ProblemError, OSError, ValueError) as exc:  # ValueError: a NUL in a path
        return exc


def _slices(spec: BatchSpec) -> Iterator[list[Job]]:
    """Jobs in slices bounded by count and listed bytes, so a batch of big objects never fills memory."""
    part: list[Job] = []
    held = 0
    for job in spec.jobs:
        if part and (len(part) >= FETCH_SLICE_FILES or held + job.size > FETCH_SLICE_BYTES):
            yield part
            part, held = [], 0
        part.append(job)
        held += min(job.size, spec.max_bytes)
    if part:
        yield part


def _contents(spec: BatchSpec) -> Iterator[tuple[Job, bytes | BaseException]]:
    if spec.seeds.local:
        real_root = seeds.real_path(spec.seeds.root)  # discovery resolved the root the same way
        for job in spec.jobs:
            yield job, _read_local(spec, job, real_root)
        return
    for part in _slices(spec):
        wanted = [j for j in part if j.size <= spec.max_bytes]
        contents = spec.seeds.fetch_many([j.rel for j in wanted], spec.max_bytes)
        fetched = dict(zip((j.rel for j in wanted), contents, strict=True))
        for job in part:
            yield job, fetched.get(job.rel, ProblemError(_too_large(spec.max_bytes)))


STAGING_ROW_GROUPS = 4  # row groups per staging file: what a merge of a few months can skip


def _write_staging(loaded: list[tuple[Outcome, Loaded]], spec: BatchSpec) -> dict[str, list[str]]:
    """One staging file per table for the batch, its rows sorted by month in a few row groups.

    Each merge reads one group of months: row-group statistics on ``_month`` let it skip most of
    every staging file, so the build reads each staged row a few times, not once per group.
    """
    files: dict[str, list[str]] = {}
    token = secrets.token_hex(6)  # unique per call: a run may parse in several rounds and re-run crashed batches
    loaded = sorted(loaded, key=lambda pair: pair[1].rows.month)  # stable: batch order within a month
    for table in schema.DOCUMENT_TABLES:
        rows: list[tuple[object, ...]] = []
        sources: list[str] = []
        months: list[str] = []
        for outcome, item in loaded:
            mine = getattr(item.rows, table.name)
            rows += mine
            sources += [outcome.rel] * len(mine)
            months += [item.rows.month] * len(mine)
        target = staging_schema(table)
        columns: list[Any] = [*zip(*rows, strict=True), sources, months] if rows else [[] for _ in target]
        arrays = [pa.array(col, type=f.type) for col, f in zip(columns, target, strict=True)]
        name = f"{table.name}-{spec.batch_no:06d}-{token}.parquet"
        with spec.staging.open_write(name) as fh:
            pq.write_table(
                pa.Table.from_arrays(arrays, schema=target),
                fh,
                compression="lz4",
                row_group_size=max(1, -(-len(rows) // STAGING_ROW_GROUPS)),
                write_statistics=["_month"],  # what merges prune by; the rest would only cost time
            )
        files[table.name] = [spec.staging.join(name)]
    return files


def process_batch(spec: BatchSpec) -> BatchResult:
    """Worker entry point: one batch of files -> outcomes + staging files."""
    outcomes: list[Outcome] = []
    loaded: list[tuple[Outcome, Loaded]] = []
    marker = Marker(spec.checkpoint)
    for i, (job, data) in enumerate(_contents(spec)):
        marker.mark(i)  # if this process dies now, job i killed it
        outcome, item = process_file(job, data, spec.run_id, spec.max_bytes)
        outcomes.append(outcome)
        if item is not None:
            loaded.append((outcome, item))
    marker.close()
    staging = _write_staging(loaded, spec) if loaded else {}
    return BatchResult(outcomes, staging)


ORPHAN_CHECK_SECONDS = 1.0


def _exit_when_gone(parent: int) -> None:
    """End this worker as soon as process ``parent`` (the one that made its pool) has ended.

    The worker's own parent is the fork server, which lives as long as any worker it forked does:
    waiting for that to change would keep both forever. A pidfd becomes readable when the process
    ends (Linux); elsewhere the pid is polled.
    """
    try:
        fd = os.pidfd_open(parent)
    except ProcessLookupError:
        os._exit(0)
    except (AttributeError, OSError):
        fd = -1
    if fd >= 0:
        select.select([fd], [], [])
        os._exit(0)
    while True:
        time.sleep(ORPHAN_CHECK_SECONDS)
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass  # alive, another user's (a reused pid cannot be ours for long)


def _worker_init(parent: int, environ: dict[str, str], cwd: str | None) -> None:
    """Start-up of a parser process: the environment and folder of the pool's maker as they are now,
    the fast YAML path (crashes are isolated here), and an exit once that process is gone.

    A worker is forked from the fork server, which was started with the environment of the pool's
    first use; fault points, credentials and settings read in a worker must be the run's. A worker
    whose run died (a Dask worker torn down with its cluster, a killed run) would otherwise wait for
    work forever, holding the run's stdout open.
    """
    if dict(os.environ) != environ:
        os.environ.clear()
        os.environ.update(environ)
    if cwd is not None:
        os.chdir(cwd)
    enable_fast_yaml()
    threading.Thread(target=_exit_when_gone, args=(parent,), daemon=True).start()


_SERVER_LOCK = threading.Lock()


def _context() -> multiprocessing.context.BaseContext:
    """Worker processes are forked from a fork server that has imported this module once.

    A spawned worker imports pyarrow, the parsing code and both YAML paths itself (~0.2 s of CPU
    each, competing with the run's own listing on a 2-core machine); a fork of the server starts
    in milliseconds, and so does each fresh process that crash isolation asks for. Unlike a fork of
    the run itself, the server is single-threaded and holds no locks, open warehouse files or DuckDB
    connections. Where there is no fork server (not POSIX), workers are spawned.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    with _SERVER_LOCK:
        ctx.set_forkserver_preload([__name__])
        _start_server()
    return ctx


def _start_server() -> None:
    """Start the fork server (if it is not running) with this process's module path.

    Python 3.11's server ignores the path it is given and imports its preload with its working
    folder first (``-c``): started in a folder that holds a ``pipeline/`` of its own, it would
    import that one. It is started with this process's ``sys.path`` as ``PYTHONPATH`` and
    ``PYTHONSAFEPATH`` set, so it finds every module where this process found it.
    """
    from multiprocessing import forkserver

    path = [p or _cwd() or "" for p in sys.path]
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "PYTHONSAFEPATH")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        forkserver.ensure_running()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def worker_executor(workers: int, ctx: multiprocessing.context.BaseContext | None = None) -> ProcessPoolExecutor:
    """Processes forked from the fork server, set up as parser workers are: the run's environment and
    folder, and an exit as soon as the run's process ends (also when it is killed)."""
    return ProcessPoolExecutor(
        workers,
        mp_context=ctx or _context(),
        initializer=_worker_init,
        initargs=(os.getpid(), dict(os.environ), _cwd()),
    )


def _import(module: str) -> None:
    importlib.import_module(module)


class Standby:
    """One worker process for one call, started ahead of it (``warm``: a module it imports meanwhile).

    The run's own process goes on with its work while the worker starts and imports; the worker
    ends with the call, so its memory goes back at once.
    """

    def __init__(self, warm: str | None = None) -> None:
        self.pool = worker_executor(1)
        if warm is not None:
            self.pool.submit(_import, warm)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the worker; its exception is raised here, and a worker that dies (killed,
        out of memory) raises ``PipelineError``. The worker ends with the call."""
        try:
            result = self.pool.submit(fn, *args).result()
        except BrokenProcessPool:
            self.close()
            raise PipelineError(
                f"a worker process died while running {getattr(fn, '__name__', fn)} (out of memory, or "
                "killed; see the system log); nothing was published"
            ) from None
        except BaseException:
            self.close(kill=True)  # interrupted (Ctrl-C, a stage timeout): do not wait for the call
            raise
        self.close()
        return result

    def close(self, kill: bool = False) -> None:
        """End the worker; ``kill``: without waiting for what it is doing. (Python 3.11's executor has
        no public way to end a busy worker, hence ``_processes``.)"""
        if kill:
            for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
                proc.kill()
        self.pool.shutdown(wait=True, cancel_futures=True)


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the folder the run started in was removed: paths are absolute by then
        return None


def crashed(job: Job) -> Outcome:
    problem = Problem(
        "parser_crash",
        "the parser process crashed on this file (e.g. libyaml on pathological nesting); the file was isolated",
    )
    return _rejected(job, problem)


class IsolatingPool:
    """Runs batches on a process pool, isolating a crash to its file (``_isolate``); the pool is reused between calls."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._ctx = _context()
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self, workers: int) -> ProcessPoolExecutor:
        return worker_executor(workers, self._ctx)

    def _live_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = self._executor(self.workers)
        return self._pool

    def helpers(self) -> Executor:
        """The pool itself, for short local jobs before the parse (listing the seeds folder).

        Starting it then also means the parse finds its workers ready (the fork server's start-up,
        its imports, takes ~0.2 s once per process; each worker then starts in milliseconds).
        """
        return self._live_pool()

    def _discard_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        self._discard_pool()

    def run(self, specs: Iterable[BatchSpec], on_done: Callable[[int], None] | None = None) -> Iterator[BatchResult]:
        """Yield results as batches finish (order not guaranteed).

        Batches are pulled lazily, a few per worker at a time, so a million-file plan never
        exists as Python objects all at once.
        """
        suspects: list[BatchSpec] = []
        source = iter(specs)
        pending: dict[Future[BatchResult], BatchSpec] = {}
        pool = self._live_pool()

        def top_up() -> None:
            while not suspects and len(pending) < 2 * self.workers:
                spec = next(source, None)
                if spec is None:
                    return
                try:
                    pending[pool.submit(process_batch, spec)] = spec
                except BrokenProcessPool:  # a helper job broke the pool before the parse: isolation sorts it out
                    suspects.append(spec)

        try:
            top_up()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    spec = pending.pop(fut)
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        suspects.append(spec)
                        continue
                    if on_done:
                        on_done(len(spec.jobs))
                    yield result
                if suspects:
                    # The pool is broken: every pending batch fails too; collect them.
                    suspects.extend(pending.values())
                    pending = {}
                top_up()
        finally:
            if suspects or pending:
                self._discard_pool()
        rest = list(source) if suspects else []  # batches never submitted: run after isolation
        if suspects:
            self._probe()
        for spec in suspects:
            for result in self._isolate(spec):
                if on_done:
                    on_done(len(result.outcomes))
                yield result
        if rest:
            yield from self.run(rest, on_done)

    def run_one(self, spec: BatchSpec) -> BatchResult:
        """One batch, crash-isolated, as one result (Dask tasks call this)."""
        out = BatchResult([])
        for result in self.run([spec]):
            out.extend(result)
        return out

    def _probe(self) -> None:
        """A worker that dies on an empty batch means no worker can run: fail the run, blame no file."""
        try:
            with self._executor(1) as pool:
                pool.submit(process_batch, BatchSpec(0, (), _NOWHERE, _NOWHERE, "probe", 1)).result()
        except BrokenProcessPool:
            raise PipelineError("parser worker processes cannot start (see the log above)") from None

    def _isolate(self, spec: BatchSpec) -> Iterator[BatchResult]:
        """Re-run a batch whose worker died, one process at a time, with a checkpoint of the file in hand.

        When the process dies, the checkpoint names the file that killed it: that file is quarantined
        and the rest of the batch runs again in a fresh process. Each crash costs one process start.
        """
        checkpoint = Checkpoint.create("pipeline-checkpoint-")
        try:
            jobs = spec.jobs
            while jobs:
                checkpoint.reset()
                attempt = BatchSpec(
                    spec.batch_no, jobs, spec.seeds, spec.staging, spec.run_id, spec.max_bytes, checkpoint.path
                )
                try:
                    with self._executor(1) as pool:
                        yield pool.submit(process_batch, attempt).result()
                    return
                except BrokenProcessPool:
                    at = checkpoint.read()
                    if not 0 <= at < len(jobs):
                        raise PipelineError("a parser worker process died before reading any file") from None
                    yield BatchResult([crashed(jobs[at])])
                    jobs = jobs[:at] + jobs[at + 1 :]
        finally:
            checkpoint.remove()


_NOWHERE = Location.parse("/nonexistent-pipeline-probe")
_local = threading.local()


def isolated_batch(spec: BatchSpec) -> BatchResult:
    """Run one batch in this worker's child process (created once per worker thread and reused).

    Where this process may not have children (a daemonic Dask worker), the batch runs
    in-process: a parser crash then costs the Dask worker, and Dask reports the batch failed.
    """
    if multiprocessing.current_process().daemon:
        return process_batch(spec)
    return _thread_pool().run_one(spec)


def _thread_pool() -> IsolatingPool:
    """This thread's one-child pool: made for its first batch, closed (its child ended) when the thread
    ends (a finalizer on the thread object) or, for a thread still alive then, at interpreter exit."""
    pool: IsolatingPool | None = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = IsolatingPool(1)
        weakref.finalize(threading.current_thread(), pool.close)
    return pool
