"""The Prefect flow `ingest`: thin wiring of the engine's stages into a few large tasks.

Per-task overhead is ~10-30 ms of orchestration, so there is one task per
stage, never one per file; parsing fans out to worker processes inside the
`parse` task. Retries only where they can help and are safe: discovery is
read-only and idempotent, so a transient OSError (a flaky network mount) is
retried; stages that change state are not, and never on bad input. Every task
has a timeout.
"""

from __future__ import annotations

# Absolute imports: Prefect deployments load this file by path as a top-level module `flow`.
from pipeline.orchestration import prefect_env

prefect_env.apply_defaults()

import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact, create_table_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from pipeline.config import load_settings  # noqa: E402
from pipeline.engine.stages import Run, make_run_id, utc_now  # noqa: E402
from pipeline.report import rejects_markdown, run_summary, summary_markdown  # noqa: E402


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only on OS-level errors (NFS hiccup, EAGAIN), never on our own errors."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


STAGE = dict(cache_policy=NO_CACHE, retry_condition_fn=_transient)


@task(name="prepare", timeout_seconds=600, **STAGE)  # type: ignore[call-overload]
def prepare(run: Run) -> None:
    run.prepare()


@task(name="discover-and-plan", retries=2, retry_delay_seconds=2, timeout_seconds=3600, **STAGE)  # type: ignore[call-overload]
def plan(run: Run) -> dict[str, int]:
    run.plan()
    return {"to_read": run.to_read.num_rows if run.to_read is not None else 0, "seen": run.counts["files_seen"]}


@task(name="parse", timeout_seconds=6 * 3600, **STAGE)  # type: ignore[call-overload]
def parse(run: Run) -> int:
    logger = get_run_logger()
    last = [0.0]

    to_terminal = os.environ.get("PIPELINE_PROGRESS") == "1"

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= 5:
            last[0] = now
            logger.info("parsed %d/%d files", done, total)
            if to_terminal:
                print(f"parsed {done:,}/{total:,} files", file=sys.stderr, flush=True)

    run.parse(progress=progress)
    run.resolve(progress)
    return run.files_parsed


@task(name="build-snapshot", timeout_seconds=6 * 3600, **STAGE)  # type: ignore[call-overload]
def build(run: Run) -> dict[str, int]:
    run.build()
    return dict(run.rows)


@task(name="post-load-checks", timeout_seconds=3600, **STAGE)  # type: ignore[call-overload]
def check(run: Run) -> None:
    run.check()


@task(name="publish", timeout_seconds=600, **STAGE)  # type: ignore[call-overload]
def publish(run: Run) -> str:
    return run.publish().id


def _artifacts(run: Run, summary: dict[str, Any]) -> None:
    key = "ingest"
    create_markdown_artifact(markdown=summary_markdown(summary), key=f"{key}-summary", description="Run summary")
    rejects = run.rejected_rows()
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
    return f"ingest-{os.path.basename(seeds) or 'seeds'}-{utc_now():%Y%m%dT%H%M%SZ}"


@flow(name="ingest", flow_run_name=_run_name, log_prints=False, timeout_seconds=12 * 3600)
def ingest(
    seeds: str = "seeds",
    warehouse: str = "warehouse",
    patterns: list[str] | None = None,
    workers: int | None = None,
    max_file_bytes: int | None = None,
    wait_seconds: float | None = None,
) -> dict[str, Any]:
    """Load a folder of seed documents into the warehouse and publish a new snapshot."""
    settings = load_settings(
        {
            "seeds": seeds,
            "warehouse": warehouse,
            "patterns": patterns,
            "workers": workers,
            "max_file_bytes": max_file_bytes,
            "wait_seconds": wait_seconds,
        }
    ).resolved()
    run = Run(settings, make_run_id(utc_now()))
    logger = get_run_logger()
    try:
        prepare(run)
        planned = plan(run)
        logger.info("%d files seen, %d to read", planned["seen"], planned["to_read"])
        parse(run)
        build(run)
        check(run)
        publish(run)
    except BaseException as exc:
        run.fail(exc)
        raise
    finally:
        run.close()
    summary = run_summary(run)
    summary["flow_run_id"] = str(flow_run.get_id())
    _artifacts(run, summary)
    logger.info(
        "published %s: %d loaded, %d rejected, %d duplicates",
        summary["snapshot_id"],
        summary["files"]["loaded"],
        summary["files"]["rejected"],
        summary["files"]["duplicate"],
    )
    return summary
