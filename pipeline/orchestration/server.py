"""A long-lived local Prefect server, for runs that have no PREFECT_API_URL.

Prefect's default without an API is a temporary server inside every run: ~6 s to start, and
its background services then compete with the parser for the CPU. Instead the first
`pipeline run` starts `prefect server start` on 127.0.0.1 in the background (one line says
so) and later runs reuse it, so every run is still recorded in a UI. `pipeline server
start|stop|status` manage it by hand.

Its database, log and state file (``server.json``: pid, port, URL) live in one folder:
``$PIPELINE_SERVER_HOME``, else ``$XDG_DATA_HOME/seed-pipeline/prefect-server`` (default
``~/.local/share/...``). A file lock makes concurrent runs start at most one server; a
state file whose server is gone (killed, rebooted) is replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import filelock

from pipeline.errors import PipelineError

DEFAULT_PORT = 4200
STATE = "server.json"
START_TIMEOUT = 120.0
SERVER_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # no network here: the attempt logs an ERROR
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    # Task-run states arrive as events; persist them promptly (defaults: batch 1, flush every 5 s).
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",  # an integer: 0.5 becomes int(0.5) = 0 upstream, a busy loop that burns a core
}


class ServerError(PipelineError):
    """The local Prefect server could not be started or reached."""


@dataclass(frozen=True)
class Server:
    pid: int
    port: int
    home: str
    started_at: float

    @property
    def url(self) -> str:
        """The UI (and the base of the API)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


def home() -> Path:
    explicit = os.environ.get("PIPELINE_SERVER_HOME")
    if explicit:
        return Path(explicit).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(data) / "seed-pipeline" / "prefect-server"


def _state(where: Path) -> Server | None:
    try:
        data = json.loads((where / STATE).read_text(encoding="utf-8"))
        return Server(int(data["pid"]), int(data["port"]), str(data["home"]), float(data["started_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _answers(server: Server, path: str = "/api/ready", timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{server.url}{path}", timeout=timeout) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status(where: Path | None = None) -> Server | None:
    """The running server recorded in ``where``, or None (no state, or its server is gone)."""
    server = _state(where or home())
    if server is None or not _alive(server.pid) or not _answers(server):
        return None
    return server


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prefect_command() -> list[str]:
    script = Path(sys.executable).with_name("prefect")
    return [str(script)] if script.exists() else [sys.executable, "-m", "prefect"]


def _stop_process(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the server's process group, SIGKILL it if it does not exit."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _lower_priority() -> None:
    """The server records runs; it must not take CPU from the runs it records (nice 10)."""
    os.nice(10)


def start(where: Path | None = None, port: int | None = None) -> tuple[Server, bool]:
    """The running server, starting one if there is none: (server, True when this call started it)."""
    where = where or home()
    where.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(where / "server.lock"), timeout=START_TIMEOUT + 30):
        running = status(where)
        if running is not None:
            return running, False
        stale = _state(where)
        if stale is not None and _alive(stale.pid):
            _stop_process(stale.pid)  # it no longer answers: replace it
        (where / STATE).unlink(missing_ok=True)
        chosen = port or (DEFAULT_PORT if _port_free(DEFAULT_PORT) else _free_port())
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(SERVER_ENV, PREFECT_HOME=str(where))
        with open(where / "server.log", "ab") as log:
            proc = subprocess.Popen(
                [*_prefect_command(), "server", "start", "--host", "127.0.0.1", "--port", str(chosen)],
                env=env,
                cwd=where,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: it outlives this run, `stop` takes it all down
                preexec_fn=_lower_priority,
            )
        server = Server(proc.pid, chosen, str(where), time.time())
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(server, timeout=1.0):
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop_process(proc.pid)
                tail = (where / "server.log").read_text(errors="replace")[-800:].strip().splitlines()
                why = tail[-1] if tail else f"exit code {proc.returncode}"
                raise ServerError(f"the local Prefect server did not start on port {chosen}: {why}")
            time.sleep(0.2)
        tmp = where / f"{STATE}.tmp"
        tmp.write_text(json.dumps(asdict(server)), encoding="utf-8")
        os.replace(tmp, where / STATE)
        return server, True


def stop(where: Path | None = None) -> Server | None:
    """Stop the recorded server (if any); returns what was stopped."""
    where = where or home()
    with filelock.FileLock(str(where / "server.lock"), timeout=60) if where.exists() else contextlib.nullcontext():
        server = _state(where)
        if server is None:
            return None
        if _alive(server.pid):
            _stop_process(server.pid)
        (where / STATE).unlink(missing_ok=True)
        return server
