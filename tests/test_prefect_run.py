"""`pipeline run` and `prefect.yaml` against a real Prefect server: what the Prefect UI/API shows.

One `prefect server start` on loopback for the module. A run is checked through the API the UI
uses: the flow run and its state, its six task runs, its log lines and its artifacts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.prefect_server import (
    PREFECT,
    PrefectServer,
    artifacts,
    run_logs,
    stop_group,
    task_name,
    task_runs,
    wait_until,
)
from pipeline import faults
from pipeline.engine.stages import STAGES as ENGINE_STAGES

from .conftest import REPO, run_cli

pytestmark = pytest.mark.server

STAGES = [stage.name for stage in ENGINE_STAGES]


@pytest.fixture
def server(prefect_server: PrefectServer) -> PrefectServer:
    """The session's Prefect server."""
    return prefect_server


RUN_NAME = re.compile(r"ingest-seeds-\d{8}T\d{6}Z")  # ingest-<seeds folder name>-<UTC start>


def flow_runs_named(server: PrefectServer, prefix: str) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with server.client() as client:
        return list(client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=prefix))))


def final_task_runs(server: PrefectServer, flow_run_id: Any, expected: int) -> list[Any]:
    """The flow run's task runs once `expected` of them are recorded in a final state (they arrive as events)."""

    def recorded() -> list[Any] | None:
        with server.client() as client:
            runs = task_runs(client, flow_run_id)
        done = len(runs) >= expected and all(r.state is not None and r.state.is_final() for r in runs)
        return runs if done else None

    return wait_until(recorded, 30, interval=0.3, what=f"{expected} task runs of flow run {flow_run_id}")


def test_run_shows_in_prefect_with_tasks_logs_and_artifacts(
    server: PrefectServer, seeds: Path, warehouse: Path
) -> None:
    proc = run_cli(
        "run", "--seeds", str(seeds), "--warehouse", str(warehouse), "--format", "json", env=server.client_env()
    )
    for noise in ("Traceback", "ERROR", "WARNING"):
        assert noise not in proc.stderr, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["files"]["loaded"] == 15

    with server.client() as client:
        flow_run = client.read_flow_run(summary["flow_run_id"])
    assert RUN_NAME.fullmatch(flow_run.name), flow_run.name
    assert flow_run.state_type.value == "COMPLETED", flow_run.state
    assert flow_run.id in [r.id for r in flow_runs_named(server, "ingest-seeds-")]  # on the server we pointed at

    tasks = final_task_runs(server, flow_run.id, len(STAGES))
    assert sorted((task_name(t) for t in tasks), key=STAGES.index) == STAGES
    assert [t.state_type.value for t in tasks] == ["COMPLETED"] * len(STAGES), [(t.name, t.state) for t in tasks]
    order = [task_name(t) for t in sorted(tasks, key=lambda t: t.start_time)]
    assert order == STAGES

    def published() -> list[Any] | None:
        with server.client() as client:
            logs = run_logs(client, flow_run.id)
        return logs if any(log.message.startswith("published ") for log in logs) else None

    logs = wait_until(published, 15, interval=0.3, what="the 'published' log line")
    messages = [log.message for log in logs]
    assert f"published {summary['snapshot_id']}: 15 loaded, 0 rejected, 0 duplicates" in messages, messages
    assert any(m.startswith("plan done in ") and m.endswith(": 15 files seen, 15 to read") for m in messages), messages
    assert "parsed 15/15 files" in messages, messages  # progress reaches the UI too
    assert all(log.level < 40 for log in logs), [(log.level, log.message) for log in logs]

    with server.client() as client:
        arts = artifacts(client, flow_run.id)
    assert set(arts) == {"ingest-summary", "ingest-rejects"}
    assert arts["ingest-summary"].type == "markdown"
    assert arts["ingest-summary"].data.startswith(f"# Ingest run {summary['run_id']}\n")
    assert "| loaded | 15 |" in arts["ingest-summary"].data
    assert arts["ingest-rejects"].data == "No quarantined files."


def test_failed_run_is_one_line_and_failed_in_prefect(server: PrefectServer, seeds: Path, warehouse: Path) -> None:
    """A stage that fails: exit 1, one line on stderr, the flow run FAILED, `pipeline status` exits 1."""
    run_cli("run", "--orchestrator", "none", "--quiet", "--seeds", str(seeds), "--warehouse", str(warehouse))
    before = json.loads(run_cli("status", "--warehouse", str(warehouse), "--format", "json").stdout)

    proc = run_cli(
        "run",
        "--quiet",
        "--seeds",
        str(seeds),
        "--warehouse",
        str(warehouse),
        env=server.client_env(**{faults.FAIL_AT: "build"}),
        check=False,
    )
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pipeline: "), proc.stderr[-4000:]
    assert "injected failure at stage build" in lines[0]

    # The module's server also holds the other tests' runs: pick this run by its parameters.
    [flow_run] = [r for r in flow_runs_named(server, "ingest-seeds-") if r.parameters.get("seeds") == str(seeds)]
    assert flow_run.state_type.value == "FAILED", flow_run.state
    assert "injected failure" in flow_run.state.message
    tasks = {task_name(t): t.state_type.value for t in final_task_runs(server, flow_run.id, 4)}
    assert tasks == {"plan": "COMPLETED", "parse": "COMPLETED", "resolve": "COMPLETED", "build": "FAILED"}

    status = run_cli("status", "--warehouse", str(warehouse), "--format", "json", check=False)
    assert status.returncode == 1, status.stdout
    after = json.loads(status.stdout)
    assert after["healthy"] is False
    assert "failed" in after["problem"] and "injected failure" in after["problem"], after["problem"]
    assert after["snapshot_id"] == before["snapshot_id"]  # the previous snapshot is kept


def test_prefect_yaml_deploys_and_runs_on_a_process_worker(server: PrefectServer, seeds: Path, warehouse: Path) -> None:
    """The recipe in prefect.yaml: `prefect work-pool create`, `prefect deploy --all` from the repo root, a worker.

    The deployment `ingest/scheduled` is hourly (cron '0 * * * *', UTC) with concurrency limit 1
    (ENQUEUE). A run of it with this test's folders as parameters, picked up by
    `prefect worker start --pool seed-pipeline --run-once`, completes and loads the warehouse.
    """
    env = server.client_env()
    before = sorted(os.listdir(REPO))
    elsewhere = seeds.parent / "elsewhere"  # deploy and work from a folder that is not the checkout
    elsewhere.mkdir()

    def prefect(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [PREFECT, *args], cwd=elsewhere, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, f"prefect {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stdout + proc.stderr
        return proc

    prefect("work-pool", "create", "seed-pipeline", "--type", "process")
    out = prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(REPO / "prefect.yaml")).stdout
    assert "Deployment 'ingest/scheduled' successfully created" in " ".join(out.split()), out
    assert sorted(os.listdir(REPO)) == before  # deploying writes nothing into the checkout

    with server.client() as client:
        deployment = client.read_deployment_by_name("ingest/scheduled")
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "0 * * * *"
    assert schedule.schedule.timezone == "UTC"
    assert schedule.active and not deployment.paused
    assert deployment.global_concurrency_limit is not None
    assert deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert deployment.work_pool_name == "seed-pipeline"
    assert deployment.entrypoint == "pipeline.orchestration.flow:ingest"  # the installed package, not a path
    assert deployment.parameters == {"seeds": "seeds", "warehouse": "warehouse"}
    assert not deployment.pull_steps  # nothing depends on the folder `prefect deploy` ran in

    with server.client() as client:
        flow_run = client.create_flow_run_from_deployment(
            deployment.id, parameters={"seeds": str(seeds), "warehouse": str(warehouse)}
        )
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "seed-pipeline", "--run-once"],
        cwd=elsewhere,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = worker.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        stop_group(worker, timeout=5)
        pytest.fail("prefect worker start --run-once did not finish within 120 s")
    finally:
        stop_group(worker, timeout=5)
    with server.client() as client:
        flow_run = client.read_flow_run(flow_run.id)
    assert flow_run.state_type.value == "COMPLETED", (flow_run.state, out[-6000:])
    assert RUN_NAME.fullmatch(flow_run.name), flow_run.name
    assert "Traceback" not in out, out[-6000:]
    info = json.loads(run_cli("status", "--warehouse", str(warehouse), "--format", "json").stdout)
    assert info["healthy"] is True and info["rows"]["articles"] == 15, info
