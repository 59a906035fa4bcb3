"""Where the parallel work of a run goes: local worker processes, or a Dask cluster.

The stages hand over small frozen specs (``BatchSpec``, ``MergeSpec``) and get back small
results; which engine runs them is chosen here, never inside a stage. Prefect's own
fan-out (tasks submitted to its Dask task runner) lives in ``pipeline.orchestration`` and
implements the same interface, so this package never imports Prefect.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from typing import Any, Protocol

from pipeline.engine.parse import BatchResult, BatchSpec, IsolatingPool, Standby, isolated_batch
from pipeline.errors import ConfigError, PipelineError
from pipeline.warehouse.merge import MergeSpec, merge_group, merge_groups

Progress = Callable[[int], None]
NO_WORKERS_TIMEOUT = 60.0  # seconds a Dask cluster may have no worker before the run gives up
Written = list[tuple[str, int]]


class Fanout(Protocol):
    def helpers(self) -> Executor | None:
        """Processes on this machine that may share local work before the parse (listing a local
        seeds folder), or None."""
        ...

    def parse(self, specs: Iterable[BatchSpec], on_done: Progress | None = None) -> Iterator[BatchResult]:
        """Run parse batches; yield results as they finish (any order)."""
        ...

    def merge(self, specs: list[MergeSpec]) -> list[Written]:
        """Run merges; results in the order of ``specs``."""
        ...

    def close(self) -> None: ...


class LocalFanout:
    """The single-machine engine: a crash-isolating process pool for parsing, one worker process for
    the merges (on threads: DuckDB and the Parquet writer release the GIL)."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self.pool = IsolatingPool(self.workers)
        self._merger: Standby | None = None  # the merges' worker, started when the parse ends

    def parse(self, specs: Iterable[BatchSpec], on_done: Progress | None = None) -> Iterator[BatchResult]:
        try:
            yield from self.pool.run(specs, on_done)
        finally:
            self.pool.close()  # no idle worker processes outlive the parse (or hold a killed run's pipes)
        self._merger = self._merger or Standby(warm=merge_groups.__module__)  # starts while the run resolves

    def helpers(self) -> Executor | None:
        return self.pool.helpers()

    def merge(self, specs: list[MergeSpec]) -> list[Written]:
        """In one worker process, on threads sharing one DuckDB database (``merge_groups``).

        Not in the run's own process, which holds the manifest (~230 MB at a million files) and the
        parse's results: DuckDB's budget and the Arrow batches streaming into the writers on top of
        those made a 1M load peak at ~1.2 GB. The worker is forked when the parse ends, so that its
        start and its import of DuckDB (~0.1 s) overlap the resolve; it ends with the merges.
        """
        if not specs:
            return []
        merger = self._merger = self._merger or Standby()
        try:
            return merger.call(merge_groups, specs, min(2, self.workers))
        finally:
            self._merger = None  # ended with the call; until then ``close`` (a failed run) kills it

    def close(self) -> None:
        self.pool.close()
        if self._merger is not None:
            self._merger.close(kill=True)
            self._merger = None


def bounded_as_completed(
    submit: Callable[[Any], Any],
    items: Iterable[Any],
    in_flight: int,
    wait_any: Callable[[list[Any]], tuple[list[Any], list[Any]]],
) -> Iterator[tuple[Any, Any]]:
    """Submit lazily with at most ``in_flight`` futures outstanding; yield (item, future) as each finishes."""
    source = iter(items)
    pending: dict[Any, Any] = {}

    def top_up() -> None:
        while len(pending) < in_flight:
            item = next(source, None)
            if item is None:
                return
            pending[submit(item)] = item

    top_up()
    while pending:
        done, _ = wait_any(list(pending))
        for fut in done:
            yield pending.pop(fut), fut
        top_up()


class DaskFanout:
    """A Dask cluster without Prefect (``--orchestrator none --runner dask``): the same specs as tasks."""

    def __init__(self, address: str | None, workers: int) -> None:
        from pipeline.engine.cluster import connect

        self.client, self._owned = connect(address, workers)
        self.in_flight = 2 * max(1, len(self.client.scheduler_info()["workers"]))

    def parse(self, specs: Iterable[BatchSpec], on_done: Progress | None = None) -> Iterator[BatchResult]:
        from distributed import wait

        def wait_any(futures: list[Any]) -> tuple[list[Any], list[Any]]:
            done, rest = wait(futures, return_when="FIRST_COMPLETED")
            return list(done), list(rest)

        def submit(spec: BatchSpec) -> Any:
            return self.client.submit(isolated_batch, spec, pure=False)

        for spec, fut in bounded_as_completed(submit, specs, self.in_flight, wait_any):
            result: BatchResult = self._result(fut)
            if on_done:
                on_done(len(spec.jobs))
            yield result

    def helpers(self) -> Executor | None:
        """None: the cluster's workers may be on other machines."""
        return None

    def merge(self, specs: list[MergeSpec]) -> list[Written]:
        futures = [self.client.submit(merge_group, s, pure=False) for s in specs]
        return [self._result(f) for f in futures]

    def _result(self, fut: Any) -> Any:
        """A task's result; fails (instead of waiting forever) when the cluster has had no worker for a while."""
        from distributed import TimeoutError as DaskTimeout

        alone_since: float | None = None
        while True:
            try:
                return fut.result(timeout=5)
            except DaskTimeout:
                if self.client.scheduler_info().get("workers"):
                    alone_since = None
                    continue
                alone_since = alone_since or time.monotonic()
                if time.monotonic() - alone_since > NO_WORKERS_TIMEOUT:
                    raise PipelineError(
                        f"the Dask cluster has had no worker for {NO_WORKERS_TIMEOUT:.0f} s "
                        "(workers that die at start-up: check their logs); nothing was published"
                    ) from None

    def close(self) -> None:
        self.client.close()
        for owned in self._owned:
            owned.close()


def local_or_dask(runner: str, workers: int, dask_address: str | None) -> Fanout:
    if runner == "processes":
        return LocalFanout(workers)
    if runner == "dask":
        return DaskFanout(dask_address, workers)
    raise ConfigError(f"unknown runner {runner!r}: use processes or dask")
