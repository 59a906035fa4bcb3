"""A real `prefect server start` on a free loopback port, for tests that need the Prefect API and UI backend.

The server gets its own temporary PREFECT_HOME (SQLite database, logs), analytics off, and its
own process group, so `stop()` can take down everything it started. Readiness means both
`/api/health` (uvicorn serves) and `/api/ready` (the database answers) return 200.
Single-worker `prefect server start` runs uvicorn and its services in one process; a clean
SIGTERM shutdown still exits with -15 (uvicorn re-raises the signal), which is not a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import psutil

PREFECT = str(Path(sys.executable).with_name("prefect"))

# Server-side settings that keep tests fast and quiet.
SERVER_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_UI_ENABLED": "false",
    # Task-run states arrive as events; persist them promptly (defaults: batch 1, flush every 5 s).
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",  # an integer: 0.5 becomes int(0.5) = 0 upstream, a busy loop that burns a core
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The inherited environment without PREFECT_* and PIPELINE_* variables (a user's profile must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PIPELINE_"))}
    env.update(extra)
    return env


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return found


def stop_group(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Signal a process started with start_new_session=True and its group; SIGKILL the group after `timeout`."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    # Anything left in the group (a grandchild that ignored the signal) goes too.
    for member in group_members(proc.pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    return int(proc.returncode)


class PrefectServer:
    """`prefect server start` on 127.0.0.1:<free port> with a throwaway PREFECT_HOME."""

    def __init__(self, home: str | Path | None = None, port: int | None = None, **server_env: str) -> None:
        self._own_home = home is None
        self.home = Path(home or tempfile.mkdtemp(prefix="prefect-home-"))
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api"
        self.server_env = server_env
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment for a client process (CLI, serve, `prefect deploy`) talking to this server."""
        client_home = self.home / "client"
        client_home.mkdir(exist_ok=True)
        return clean_env(
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(client_home),
            DO_NOT_TRACK="1",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            **extra,
        )

    def start(self, timeout: float = 90.0) -> float:
        env = clean_env(PREFECT_HOME=str(self.home), **SERVER_ENV, **self.server_env)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() kills the whole group
        )
        with httpx.Client(timeout=2) as http:
            while time.monotonic() - t0 < timeout:
                if self.proc.poll() is not None:
                    rc = self.proc.returncode
                    self.stop()
                    raise RuntimeError(
                        f"prefect server exited with {rc} before it was ready:\n{self.log_text()[-3000:]}"
                    )
                try:
                    if (
                        http.get(f"{self.api_url}/health").status_code == 200
                        and http.get(f"{self.api_url}/ready").status_code == 200
                    ):
                        self.startup_seconds = time.monotonic() - t0
                        return self.startup_seconds
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        log = self.log_text()[-3000:]
        self.stop()
        raise TimeoutError(f"prefect server not ready after {timeout:.0f} s:\n{log}")

    def stop(self, timeout: float = 15.0) -> int | None:
        rc = None
        if self.proc is not None:
            rc = stop_group(self.proc, signal.SIGTERM, timeout)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_home and not os.environ.get("KEEP_PREFECT_HOME"):
            shutil.rmtree(self.home, ignore_errors=True)
        return rc

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """A synchronous Prefect client for this server, usable in the test process."""
        from prefect.client.orchestration import get_client
        from prefect.settings import temporary_settings

        with temporary_settings(updates={"api.url": self.api_url}), get_client(sync_client=True) as client:
            yield client

    def __enter__(self) -> PrefectServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(predicate: Any, timeout: float, interval: float = 0.5, what: str = "condition") -> Any:
    """Poll `predicate()` until it returns a truthy value; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def deployment_runs(client: Any, deployment_id: Any, *state_types: str) -> list[Any]:
    """Flow runs of a deployment, optionally only those whose state type is one of `state_types` (e.g. "COMPLETED")."""
    return list(client.read_flow_runs(flow_run_filter=_runs_filter(deployment_id, state_types), limit=200))


def count_runs(client: Any, deployment_id: Any, *state_types: str) -> int:
    """Like `deployment_runs`, counted by the server (POST /api/flow_runs/count)."""
    return int(client.count_flow_runs(flow_run_filter=_runs_filter(deployment_id, state_types)))


def _runs_filter(deployment_id: Any, state_types: tuple[str, ...]) -> Any:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    flt = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
    if state_types:
        flt.state = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(s) for s in state_types]))
    return flt


def task_runs(client: Any, flow_run_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return list(client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200))


def artifacts(client: Any, flow_run_id: Any) -> dict[str, Any]:
    """Artifacts of a flow run (and its task runs), by key."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    return {a.key: a for a in found if a.key}


def run_logs(client: Any, flow_run_id: Any) -> list[Any]:
    """Log rows of a flow run, its task runs included, oldest first."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    return list(client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200))


def task_name(task_run: Any) -> str:
    """The task's name from a task run name like 'discover-and-plan-e29' (Prefect appends a short suffix)."""
    return str(task_run.name).rsplit("-", 1)[0]
