"""The Prefect flow `ingest`: the engine's ``STAGES`` as Prefect tasks of the same names, nothing more.

Each stage is one task called in the flow process (Prefect costs ~5-90 ms per task, so never
one per file). With ``runner="processes"`` parsing fans out to local worker processes inside
the `parse` task. With ``runner="dask"`` the flow opens a Dask task runner and submits parse
batches (about a thousand files each) and month merges as tasks `parse-batch` and `merge`,
so they run on the cluster and show in the UI. Retries only where safe and useful: `plan`
is read-only and is retried on OSError; stages that change state are not, and bad input
never is. Every task has a timeout.
"""

from __future__ import annotations

# Absolute imports: Prefect deployments load this file by path as a top-level module `flow`.
from pipeline.orchestration import prefect_env

prefect_env.apply_defaults()

import os  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterable, Iterator  # noqa: E402
from contextvars import ContextVar  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact, create_table_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.futures import as_completed  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from pipeline.config import FLOW_PARAMETERS, load_settings  # noqa: E402
from pipeline.engine import stages  # noqa: E402
from pipeline.engine.fanout import Fanout, LocalFanout, Progress, Written, bounded_as_completed  # noqa: E402
from pipeline.engine.parse import BatchResult, BatchSpec, isolated_batch  # noqa: E402
from pipeline.engine.stages import STAGES, Services, Stage, State  # noqa: E402
from pipeline.progress import PLAIN_EVERY, Reporter  # noqa: E402
from pipeline.report import rejects_markdown, run_summary, summary_markdown  # noqa: E402
from pipeline.storage.location import transient  # noqa: E402
from pipeline.warehouse.merge import MergeSpec, merge_group  # noqa: E402

STAGE_TIMEOUT = 6 * 3600


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only on transient I/O errors (a network mount or object store hiccup), never on our own errors."""
    try:
        state.result()
    except Exception as exc:
        return transient(exc)
    return False


# A run's live state, by run id, in the flow process. Stage tasks take only the run id: Prefect
# records (and ships with every task submitted from inside a task) a task's parameters, and a
# run's state holds Arrow tables, a worker pool and the writer lock.
# Prefect ships the submitting task (and so this registry, through its globals) with every task it
# submits to Dask; the registry pickles as "the registry of the process that unpickles it".
class _Registry(dict[str, tuple[list[State], Services]]):
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_registry, ())


def _registry() -> _Registry:
    return _LIVE


_LIVE = _Registry()


def _stage_task(stage: Stage) -> Any:
    def run_stage(run_id: str) -> float:
        box, services = _LIVE[run_id]
        box[0] = stage.run(box[0], services)
        return round(box[0].timings.get(stage.name, 0.0), 3)

    return task(
        name=stage.name,
        description=stage.doc,
        retries=stage.retries,
        retry_delay_seconds=2,
        retry_condition_fn=_transient,
        cache_policy=NO_CACHE,
        timeout_seconds=STAGE_TIMEOUT,
    )(run_stage)


STAGE_TASKS = {stage.name: _stage_task(stage) for stage in STAGES}


# Module-level functions of their own, so Dask pickles the tasks by reference.
@task(name="parse-batch", cache_policy=NO_CACHE, timeout_seconds=3600)
def parse_batch(spec: BatchSpec) -> BatchResult:
    """About a thousand files: read, parse, stage rows; a parser crash costs only its file."""
    return isolated_batch(spec)


@task(name="merge", cache_policy=NO_CACHE, timeout_seconds=STAGE_TIMEOUT)
def merge_months(spec: MergeSpec) -> Written:
    """One table's rows for a group of months, merged and sorted into new data files."""
    return merge_group(spec)


class PrefectFanout:
    """Parse batches and merges as Prefect tasks on the flow's Dask task runner, a few per worker in flight."""

    def __init__(self, runner: Any, in_flight: int) -> None:
        self.runner = runner
        self.in_flight = max(2, in_flight)
        self.submitted = 0  # task runs this fan-out created

    def parse(self, specs: Iterable[BatchSpec], on_done: Progress | None = None) -> Iterator[BatchResult]:
        def submit(spec: BatchSpec) -> Any:
            self.submitted += 1
            return self.runner.submit(parse_batch, {"spec": spec})

        def first_done(futures: list[Any]) -> tuple[list[Any], list[Any]]:
            return [next(as_completed(futures))], []

        for spec, fut in bounded_as_completed(submit, specs, self.in_flight, first_done):
            result: BatchResult = fut.result(raise_on_failure=True)
            if on_done:
                on_done(len(spec.jobs))
            yield result

    def merge(self, specs: list[MergeSpec]) -> list[Written]:
        futures = [self.runner.submit(merge_months, {"spec": s}) for s in specs]
        self.submitted += len(futures)
        return [f.result(raise_on_failure=True) for f in futures]

    def close(self) -> None:
        pass


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


def _run_stages(ctx: stages.RunContext, services: Services) -> State:
    box = [State(ctx)]
    _LIVE[ctx.run_id] = (box, services)
    try:
        for stage in STAGES:
            services.reporter.stage_started(stage.name)
            t0 = time.perf_counter()
            STAGE_TASKS[stage.name](ctx.run_id)
            services.reporter.stage_finished(stage.name, time.perf_counter() - t0, stages.describe(stage.name, box[0]))
        return box[0]
    finally:
        del _LIVE[ctx.run_id]


def _dask_runner(settings: Any) -> Any:
    from prefect_dask import DaskTaskRunner

    from pipeline.engine.cluster import enable_child_processes, local_cluster_kwargs

    prefect_env.require_api("runner dask")
    enable_child_processes()
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(settings.workers))


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
    seeds = str(flow_run.parameters.get("seeds", "seeds")).rstrip("/")
    return f"ingest-{os.path.basename(seeds) or 'seeds'}-{stages.utc_now():%Y%m%dT%H%M%SZ}"


@flow(name="ingest", flow_run_name=_run_name, log_prints=False, timeout_seconds=12 * 3600)
def ingest(
    seeds: str = "seeds",
    warehouse: str = "warehouse",
    patterns: list[str] | None = None,
    workers: int | None = None,
    max_file_bytes: int | None = None,
    wait_seconds: float | None = None,
    runner: str | None = None,
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Load seed documents (a folder or s3://bucket/prefix) into the warehouse and publish a new snapshot."""
    given = dict(locals())
    settings = load_settings({k: given[k] for k in FLOW_PARAMETERS}).resolved()
    ctx, lock = stages.open_run(settings, stages.make_run_id(stages.utc_now()))
    fanout: Fanout | None = None
    dask_runner = None
    try:
        if settings.runner == "dask":
            dask_runner = _dask_runner(settings).__enter__()
            fanout = PrefectFanout(dask_runner, 2 * settings.workers)
        else:
            fanout = LocalFanout(settings.workers)
        state = _run_stages(ctx, Services(fanout, lock, reporter=RunLogReporter(_console())))
    except BaseException as exc:
        stages.record_failure(ctx, exc)
        raise
    finally:
        try:
            if fanout is not None:
                fanout.close()
            if dask_runner is not None:
                dask_runner.__exit__(None, None, None)
        finally:
            stages.close_run(ctx, lock)
    summary = run_summary(state)
    summary["flow_run_id"] = str(flow_run.get_id())
    summary["task_runs"] = len(STAGES) + (fanout.submitted if isinstance(fanout, PrefectFanout) else 0)
    _artifacts(state, summary)
    get_run_logger().info(
        "published %s: %d loaded, %d rejected, %d duplicates",
        summary["snapshot_id"],
        summary["files"]["loaded"],
        summary["files"]["rejected"],
        summary["files"]["duplicate"],
    )
    return summary
