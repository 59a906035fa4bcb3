"""The Prefect flow `ingest`: the engine's one run loop (``stages.run_all``) with each stage a Prefect task.

Each stage is one task of the same name called in the flow process (Prefect costs ~5-90 ms per
task, so never one per file); the task is ``stages.run_stage`` itself, so retries (``plan`` on
transient I/O errors) live there only. With ``runner="processes"`` parsing fans out to local
worker processes inside the `parse` task. With ``runner="dask"`` the flow opens a Dask task
runner and submits parse batches (about a thousand files each) and month merges as tasks
`parse-batch` and `merge`, so they run on the cluster and show in the UI. Every task has a
timeout. The flow's parameters are the run's settings (``config.to_parameters``).
"""

from __future__ import annotations

# First, before Prefect is imported: this project's Prefect defaults (see before_prefect.py). Absolute
# imports: Prefect deployments load this file by path as a top-level module `flow`.
from pipeline.orchestration import before_prefect  # noqa: F401  (imported for its effect)

# isort: split
import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor
from contextvars import ContextVar
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote
from pydantic import SecretStr

from pipeline.config import Settings, from_parameters
from pipeline.engine import stages
from pipeline.engine.fanout import Progress, Written, bounded_as_completed
from pipeline.engine.parse import BatchResult, BatchSpec, isolated_batch
from pipeline.engine.stages import STAGES, Services, Stage, State
from pipeline.orchestration import prefect_env
from pipeline.progress import PLAIN_EVERY, Reporter
from pipeline.report import rejects_markdown, run_summary, summary_markdown
from pipeline.warehouse.merge import MergeSpec, merge_group

STAGE_TIMEOUT = 6 * 3600

# One task per stage: ``stages.run_stage`` under the stage's name (no Prefect retries: run_stage has them).
STAGE_TASKS = {
    stage.name: task(name=stage.name, description=stage.doc, cache_policy=NO_CACHE, timeout_seconds=STAGE_TIMEOUT)(
        stages.run_stage
    )
    for stage in STAGES
}


def run_as_task(stage: Stage, state: State, services: Services) -> State:
    """The loop's step: the stage as its task. The arguments are quoted (Prefect does not walk them
    looking for futures: a state holds Arrow tables and long tuples)."""
    stage_task: Any = STAGE_TASKS[stage.name]
    result: State = stage_task(quote(stage), quote(state), quote(services))
    return result


# Module-level functions of their own, so Dask pickles the tasks by reference.
@task(name="parse-batch", cache_policy=NO_CACHE, timeout_seconds=3600)
def parse_batch(spec: BatchSpec) -> BatchResult:
    """About a thousand files: read, parse, stage rows; a parser crash costs only its file."""
    return isolated_batch(spec)


@task(name="merge", cache_policy=NO_CACHE, timeout_seconds=STAGE_TIMEOUT)
def merge_months(spec: MergeSpec) -> Written:
    """One table's rows for a group of months, merged and sorted into new data files."""
    return merge_group(spec)


@contextlib.contextmanager
def _without_stage_parameters() -> Iterator[None]:
    """Prefect ships the submitting task's context, its parameters included, with every task it sends
    to Dask; a stage's parameters are the run's state (Arrow tables) and services (a lock, a pool).
    The parse batches and merges need none of it: they are submitted with the parameters left out."""
    current = TaskRunContext.get()
    if current is None:
        yield
        return
    token = TaskRunContext.__var__.set(current.model_copy(update={"parameters": {}}))
    try:
        yield
    finally:
        TaskRunContext.__var__.reset(token)


class PrefectFanout:
    """Parse batches and merges as Prefect tasks on a Dask task runner, a few per worker in flight.

    The Dask cluster (a running one at ``dask_address``, or a LocalCluster) starts at the first
    batch, so a run that finds the warehouse locked starts none; ``close`` stops it.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.in_flight = max(2, 2 * settings.workers)
        self.submitted = 0  # task runs this fan-out created
        self._runner: Any = None

    def _started(self) -> Any:
        if self._runner is None:
            from prefect_dask import DaskTaskRunner

            from pipeline.engine.cluster import enable_child_processes, local_cluster_kwargs

            prefect_env.require_api("runner dask")
            enable_child_processes()
            s = self.settings
            runner = (
                DaskTaskRunner(address=s.dask_address)
                if s.dask_address
                else DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(s.workers))
            )
            self._runner = runner.__enter__()
        return self._runner

    def helpers(self) -> Executor | None:
        """None: the cluster starts at the first batch (a no-op run starts none), and its workers
        may be on other machines."""
        return None

    def _submit(self, fn: Any, spec: Any) -> Any:
        runner = self._started()
        with _without_stage_parameters():
            future = runner.submit(fn, {"spec": spec})
        self.submitted += 1
        return future

    def parse(self, specs: Iterable[BatchSpec], on_done: Progress | None = None) -> Iterator[BatchResult]:
        def first_done(futures: list[Any]) -> tuple[list[Any], list[Any]]:
            return [next(as_completed(futures))], []

        submit = lambda spec: self._submit(parse_batch, spec)  # noqa: E731
        for spec, fut in bounded_as_completed(submit, specs, self.in_flight, first_done):
            result: BatchResult = fut.result(raise_on_failure=True)
            if on_done:
                on_done(len(spec.jobs))
            yield result

    def merge(self, specs: list[MergeSpec]) -> list[Written]:
        futures = [self._submit(merge_months, s) for s in specs]
        return [f.result(raise_on_failure=True) for f in futures]

    def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            runner.__exit__(None, None, None)


# The CLI's terminal reporter (a progress bar or plain lines) when it calls the flow in its own process.
console: ContextVar[Reporter | None] = ContextVar("pipeline_console_reporter", default=None)


def _console() -> Reporter:
    """The console reporter (a function, so the flow's code reaches the ContextVar by reference:
    Prefect pickles the flow, with what its code names, into every task it submits to Dask)."""
    return console.get() or Reporter()


class RunLogReporter(Reporter):
    """Progress into the flow run's log (the Prefect UI), and on to the console reporter if there is one."""

    def __init__(self, forward: Reporter) -> None:
        self.logger = get_run_logger()
        self.forward = forward
        self.last = 0.0

    def stage_started(self, name: str) -> None:
        self.forward.stage_started(name)

    def parsed(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - self.last >= PLAIN_EVERY:
            self.last = now
            self.logger.info("parsed %d/%d files", done, total)
        self.forward.parsed(done, total)

    def stage_finished(self, name: str, seconds: float, detail: str = "") -> None:
        self.logger.info("%s done in %.1f s%s", name, seconds, f": {detail}" if detail else "")
        self.forward.stage_finished(name, seconds, detail)


def _artifacts(state: State, summary: dict[str, Any]) -> None:
    key = "ingest"
    create_markdown_artifact(markdown=summary_markdown(summary), key=f"{key}-summary", description="Run summary")
    rejects = state.need("built").rejects.to_pylist()
    if rejects:
        create_table_artifact(
            table=[{k: r[k] for k in ("source_path", "stage", "reason", "message")} for r in rejects[:1000]],
            key=f"{key}-rejects",
            description=f"{len(rejects)} quarantined files (first 1000)",
        )
    else:
        create_markdown_artifact(markdown=rejects_markdown([]), key=f"{key}-rejects", description="Quarantined files")


def _run_name() -> str:
    """e.g. ingest-seeds-20261125T1900Z: scheduled runs stay distinguishable in the UI."""
    seeds = str(flow_run.parameters.get("seeds") or os.environ.get("PIPELINE_SEEDS") or "seeds").rstrip("/")
    return f"ingest-{os.path.basename(seeds) or 'seeds'}-{stages.utc_now():%Y%m%dT%H%M%SZ}"


@flow(name="ingest", flow_run_name=_run_name, log_prints=False, timeout_seconds=12 * 3600)
def ingest(
    seeds: str | None = None,
    warehouse: str | None = None,
    patterns: list[str] | None = None,
    max_file_bytes: int | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    wait_seconds: float | None = None,
    gc_grace_seconds: float | None = None,
    retention: str | None = None,
    memory_limit: str | None = None,
    runner: str | None = None,
    dask_address: str | None = None,
    storage_options: SecretStr | None = None,
    lease_seconds: float | None = None,
) -> dict[str, Any]:
    """Load seed documents (a folder or s3://bucket/prefix) into the warehouse and publish a new snapshot.

    Every parameter is a setting of the run (see `pipeline run --help` and the README); one left
    empty takes its PIPELINE_* variable where the flow runs, then the default. `storage_options`
    (JSON, may hold keys) is a secret: the API and UI show it as '**********'.
    """
    settings = from_parameters(dict(locals())).resolved()
    fanout = PrefectFanout(settings) if settings.runner == "dask" else None
    state = stages.run_all(
        settings,
        stages.make_run_id(stages.utc_now()),
        reporter=RunLogReporter(_console()),
        fanout=fanout,
        step=run_as_task,
    )
    summary = run_summary(state)
    summary["flow_run_id"] = str(flow_run.get_id())
    summary["task_runs"] = len(STAGES) + (fanout.submitted if fanout is not None else 0)
    _artifacts(state, summary)
    get_run_logger().info(
        "published %s: %d loaded, %d rejected, %d duplicates",
        summary["snapshot_id"],
        summary["files"]["loaded"],
        summary["files"]["rejected"],
        summary["files"]["duplicate"],
    )
    return summary
