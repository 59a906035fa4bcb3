"""The local Prefect server that runs without PREFECT_API_URL start and reuse: real processes, real API.

Each test has its own server home (PIPELINE_SERVER_HOME), so its server is its own; every test
stops what it started and checks that no server process is left.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.prefect_server import task_name, wait_until
from pipeline.engine.stages import STAGES

from .conftest import REPO, cli_env, run_cli

pytestmark = pytest.mark.server
STARTED = "pipeline: started a local Prefect server"


def env_for(home: Path) -> dict[str, str]:
    env = cli_env(PIPELINE_SERVER_HOME=str(home))
    for key in [k for k in env if k.startswith("PREFECT_")]:
        del env[key]  # no API configured: the local server is used
    env["PREFECT_HOME"] = str(home / "client")
    return env


def state(home: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((home / "server.json").read_text(encoding="utf-8"))
    return data


def flow_run_tasks(api_url: str, flow_run_id: str) -> list[str]:
    """Names of the flow run's completed task runs, once all six are recorded (the server writes them
    from events, within about a second)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import temporary_settings

    def completed() -> list[str] | None:
        with temporary_settings(updates={"api.url": api_url}), get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            assert client.read_flow_run(flow_run_id).state_type.value == "COMPLETED"
        names = sorted(task_name(r) for r in runs if r.state is not None and r.state.is_completed())
        return names if len(names) >= len(STAGES) else None

    found: list[str] = wait_until(completed, 20, interval=0.2, what=f"task runs of flow run {flow_run_id}")
    return found


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_start_reuse_run_and_stop(tmp_path: Path, seeds: Path, warehouse: Path) -> None:
    home = tmp_path / "server"
    env = env_for(home)
    status = run_cli("server", "status", env=env, check=False)
    assert status.returncode == 1 and "no local Prefect server" in status.stdout

    started = run_cli("server", "start", env=env)
    assert "Prefect server started: http://127.0.0.1:" in started.stdout
    first = state(home)
    again = run_cli("server", "start", env=env)
    assert "already running" in again.stdout and state(home)["pid"] == first["pid"]
    assert run_cli("server", "status", env=env).stdout.startswith("Prefect server running: ")

    proc = run_cli("run", "--seeds", str(seeds), "--warehouse", str(warehouse), "--format", "json", env=env)
    assert STARTED not in proc.stderr  # reused, not started
    summary = json.loads(proc.stdout)
    api = f"http://127.0.0.1:{first['port']}/api"
    assert summary["prefect_api_url"] == api
    assert summary["flow_run_url"] == f"http://127.0.0.1:{first['port']}/runs/flow-run/{summary['flow_run_id']}"
    assert flow_run_tasks(api, summary["flow_run_id"]) == sorted(s.name for s in STAGES)
    text = run_cli("run", "--seeds", str(seeds), "--warehouse", str(warehouse), env=env).stdout
    assert f"Prefect: http://127.0.0.1:{first['port']}/runs/flow-run/" in text  # the human summary links the UI

    stopped = run_cli("server", "stop", env=env)
    assert "stopped the Prefect server" in stopped.stdout and gone(first["pid"])
    assert not (home / "server.json").exists()
    assert run_cli("server", "status", env=env, check=False).returncode == 1
    assert "no local Prefect server was running" in run_cli("server", "stop", env=env).stdout


def test_a_stale_server_is_replaced_and_two_runs_at_once_start_one(tmp_path: Path, seeds: Path) -> None:
    home = tmp_path / "server"
    home.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (home / "server.json").write_text(
        json.dumps({"pid": dead.pid, "port": 1, "home": str(home), "started_at": 0}), encoding="utf-8"
    )
    env = env_for(home)
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--seeds", str(seeds), "--quiet", "--format", "json"]
    procs = [
        subprocess.Popen(
            [*cmd, "--warehouse", str(tmp_path / f"w{i}")],
            cwd=REPO,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for i in range(2)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    try:
        assert [p.returncode for p in procs] == [0, 0], outs
        assert sum(STARTED in err for _, err in outs) == 1, [err for _, err in outs]  # one run started it
        server = state(home)
        assert server["pid"] != dead.pid and server["port"] != 1
        summaries = [json.loads(out) for out, _ in outs]
        assert {s["prefect_api_url"] for s in summaries} == {f"http://127.0.0.1:{server['port']}/api"}
        for s in summaries:
            assert flow_run_tasks(s["prefect_api_url"], s["flow_run_id"]) == sorted(st.name for st in STAGES)
        servers = [p for p in psutil.process_iter(["cmdline"]) if "server" in (p.info["cmdline"] or [])
                   and str(server["port"]) in (p.info["cmdline"] or [])]  # fmt: skip
        assert len(servers) == 1
    finally:
        run_cli("server", "stop", env=env)
    assert gone(server["pid"])


def test_recorder_flush_interval_is_a_whole_number() -> None:
    """Prefect reads it with int(): 0.5 became 0, a busy loop that kept a core at 100% on an idle server."""
    from harness.prefect_server import SERVER_ENV
    from pipeline.orchestration import prefect_env, server

    for env in (prefect_env.DEFAULTS, server.SERVER_ENV, SERVER_ENV):
        value = env["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL"]
        assert float(value).is_integer() and float(value) >= 1, value
