"""Parse batches of files in worker processes, writing rows straight to staging Parquet.

Workers return only small per-file outcomes; rows never travel back to the
parent as Python objects (pickling dicts costs ~25% of parse time). A worker
that dies (libyaml can segfault on some inputs) takes down only its batch,
which is then bisected in fresh processes until the one file that kills the
parser is found and quarantined; every other file still loads.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import PipelineError
from pipeline.read.extract import Loaded, extract, read_capped, sha256
from pipeline.read.normalize import Source
from pipeline.read.problems import Problem, ProblemError
from pipeline.warehouse import schema

# Hidden staging columns: which file a row came from and its partition.
STAGING_EXTRA = [pa.field("_source", pa.string(), nullable=False), pa.field("_month", pa.string(), nullable=False)]
FAULT_CRASH_ENV = "PIPELINE_FAULT_CRASH_ON"  # test hook: a worker dies on files whose path contains this


@dataclass(frozen=True)
class Job:
    rel: str
    path: str
    size: int
    mtime_ns: int
    old_sha: str | None  # content hash of the last loaded version, when known


@dataclass
class Outcome:
    """What became of one file in this run."""

    rel: str
    size: int
    mtime_ns: int
    sha: str | None
    status: str  # loaded | rejected | unchanged
    article_id: str | None = None
    month: str | None = None
    problem: Problem | None = None
    unknown_keys: tuple[str, ...] = ()


@dataclass
class BatchResult:
    outcomes: list[Outcome]
    staging: dict[str, str] = field(default_factory=dict)  # table -> staging file


def batch_size(total: int, workers: int, cap: int) -> int:
    """Files per batch: about four batches per worker (progress, crash isolation), at most ``cap``."""
    return max(1, min(cap, -(-total // (workers * 4))))


def staging_schema(table: schema.Table) -> pa.Schema:
    return pa.schema(list(table.arrow_schema()) + STAGING_EXTRA)


def _maybe_crash(rel: str) -> None:
    marker = os.environ.get(FAULT_CRASH_ENV)
    if marker and marker in rel:
        os.kill(os.getpid(), signal.SIGSEGV)


def process_file(job: Job, run_id: str, max_bytes: int) -> tuple[Outcome, Loaded | None]:
    """Read, hash and (unless unchanged) parse one file."""
    try:
        if job.size > max_bytes:
            raise ProblemError(
                Problem("read", "too_large", f"file is larger than the {max_bytes:,}-byte cap (max_file_bytes)")
            )
        data = read_capped(job.path, max_bytes)
    except ProblemError as exc:
        return Outcome(job.rel, job.size, job.mtime_ns, None, "rejected", problem=exc.problem), None
    except OSError as exc:
        problem = Problem("read", "unreadable", f"cannot read file: {exc.strerror or exc}")
        return Outcome(job.rel, job.size, job.mtime_ns, None, "rejected", problem=problem), None
    digest = sha256(data)
    if digest == job.old_sha:
        return Outcome(job.rel, len(data), job.mtime_ns, digest, "unchanged"), None
    _maybe_crash(job.rel)
    try:
        result: Loaded | Problem = extract(data, Source(job.rel, digest), run_id)
    except Exception as exc:  # a bug on one odd file must not stop the others
        result = Problem(
            "contract",
            "unexpected_error",
            f"the pipeline failed on this file ({type(exc).__name__}: {exc}); please report it with the file",
        )
    if isinstance(result, Problem):
        return Outcome(job.rel, len(data), job.mtime_ns, digest, "rejected", problem=result), None
    outcome = Outcome(
        job.rel,
        len(data),
        job.mtime_ns,
        digest,
        "loaded",
        article_id=result.rows.article_id,
        month=result.rows.month,
        unknown_keys=tuple(sorted(result.unknown_keys)),
    )
    return outcome, result


def _write_staging(loaded: list[tuple[Outcome, Loaded]], folder: str, batch_no: int) -> dict[str, str]:
    files: dict[str, str] = {}
    token = secrets.token_hex(6)
    for table in schema.DOCUMENT_TABLES:
        rows: list[tuple[object, ...]] = []
        for outcome, item in loaded:
            extra = (outcome.rel, item.rows.month)
            rows.extend((*r, *extra) for r in getattr(item.rows, table.name))
        target = staging_schema(table)
        columns: list[Any] = list(zip(*rows, strict=True)) if rows else [[] for _ in target]
        arrays = [pa.array(col, type=f.type) for col, f in zip(columns, target, strict=True)]
        # Unique per call: a run may parse in several rounds (promoted duplicates), each restarting batch numbers.
        path = os.path.join(folder, f"{table.name}-{batch_no:06d}-{token}.parquet")
        pq.write_table(pa.Table.from_arrays(arrays, schema=target), path, compression="lz4")
        files[table.name] = path
    return files


def process_batch(batch_no: int, jobs: list[Job], folder: str, run_id: str, max_bytes: int) -> BatchResult:
    """Worker entry point: one batch of files -> outcomes + staging files."""
    outcomes: list[Outcome] = []
    loaded: list[tuple[Outcome, Loaded]] = []
    for job in jobs:
        outcome, item = process_file(job, run_id, max_bytes)
        outcomes.append(outcome)
        if item is not None:
            loaded.append((outcome, item))
    staging = _write_staging(loaded, folder, batch_no) if loaded else {}
    return BatchResult(outcomes, staging)


def _crashed(job: Job) -> BatchResult:
    problem = Problem(
        "yaml",
        "parser_crash",
        "the parser process crashed on this file (e.g. libyaml on pathological nesting); the file was isolated",
    )
    return BatchResult([Outcome(job.rel, job.size, job.mtime_ns, None, "rejected", problem=problem)])


class Parser:
    """Runs batches on a process pool, isolating crashes by bisection."""

    def __init__(self, workers: int, folder: str, run_id: str, max_bytes: int) -> None:
        self.workers = max(1, workers)
        self.folder = folder
        self.run_id = run_id
        self.max_bytes = max_bytes
        self._next_batch = 0
        self._ctx = multiprocessing.get_context("spawn")

    def _pool(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=workers, mp_context=self._ctx)

    def _submit(self, pool: ProcessPoolExecutor, jobs: list[Job]) -> Future[BatchResult]:
        self._next_batch += 1
        return pool.submit(process_batch, self._next_batch, jobs, self.folder, self.run_id, self.max_bytes)

    def run(self, batches: Iterable[list[Job]], on_done: Callable[[int], None] | None = None) -> Iterator[BatchResult]:
        """Yield results as batches finish (order not guaranteed).

        Batches are pulled lazily, a few per worker at a time, so a million-file plan never
        exists as Python objects all at once.
        """
        suspects: list[list[Job]] = []
        source = iter(batches)
        pending: dict[Future[BatchResult], list[Job]] = {}
        pool = self._pool(self.workers)
        try:

            def top_up() -> None:
                while not suspects and len(pending) < 2 * self.workers:
                    jobs = next(source, None)
                    if jobs is None:
                        return
                    pending[self._submit(pool, jobs)] = jobs

            top_up()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    jobs = pending.pop(fut)
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        suspects.append(jobs)
                        continue
                    if on_done:
                        on_done(len(jobs))
                    yield result
                if suspects:
                    # The pool is broken: every pending batch fails too; collect them.
                    suspects.extend(pending.values())
                    pending = {}
                top_up()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        rest = list(source) if suspects else []  # batches never submitted: run after isolation
        if suspects:
            self._probe()
        for jobs in suspects:
            for result in self._isolate(jobs):
                if on_done:
                    on_done(len(result.outcomes))
                yield result
        if rest:
            yield from self.run(rest, on_done)

    def _probe(self) -> None:
        """A worker that dies on an empty batch means no worker can run: fail the run, blame no file."""
        try:
            with self._pool(1) as pool:
                self._submit(pool, []).result()
        except BrokenProcessPool:
            raise PipelineError("parser worker processes cannot start (see the log above)") from None

    def _isolate(self, jobs: list[Job]) -> Iterator[BatchResult]:
        """Re-run a batch whose worker died, halving it until the culprit is alone."""
        with self._pool(1) as pool:
            fut = self._submit(pool, jobs)
            try:
                result = fut.result()
            except BrokenProcessPool:
                result = None
        if result is not None:
            yield result
        elif len(jobs) == 1:
            yield _crashed(jobs[0])
        else:
            mid = len(jobs) // 2
            yield from self._isolate(jobs[:mid])
            yield from self._isolate(jobs[mid:])
