"""`pipeline serve` against a real Prefect server: runs on a real schedule, one at a time, clean stop.

Everything goes through a real `prefect server start` on loopback (one per module) and real
`pipeline serve` processes, observed only through the Prefect API and the warehouse, as an
operator would. Bounded: every wait has a deadline, every process is killed in a finalizer.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.prefect_server import (
    PrefectServer,
    artifacts,
    count_runs,
    deployment_runs,
    group_members,
    stop_group,
    wait_until,
)
from pipeline import faults

from .conftest import REPO, open_catalog, run_cli

pytestmark = pytest.mark.server

RUN_TIMEOUT = 120  # seconds to wait for scheduled runs to complete (first run ~8 s, then one per interval)
SLEEP_SECONDS = "4"  # faults.SLEEP_HOLDING_LOCK: each run holds the warehouse lock this long (> the interval)


@pytest.fixture(scope="module")
def server() -> Iterator[PrefectServer]:
    """A server of this module's own: its deployments (the default name `scheduled` among them) and
    scheduled runs must not meet the prefect.yaml deployment of test_prefect_run on the session server."""
    srv = PrefectServer(
        # An ENQUEUEd run that finds the deployment's slot taken is rescheduled this much later
        # (AwaitingConcurrencySlot); the default 30 s would only make the overlap tests slower.
        PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS="2",
    )
    srv.start()
    yield srv
    srv.stop()


@dataclass
class Serve:
    """A `pipeline serve` process in its own session, with its output in files."""

    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    descendants: list[psutil.Process] = field(default_factory=list)

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def remember_descendants(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            self.descendants += psutil.Process(self.proc.pid).children(recursive=True)

    def survivors(self) -> list[psutil.Process]:
        """Processes of its group, or that it started, still alive (zombies already reaped by the kernel excluded)."""
        alive = {p.pid: p for p in group_members(self.proc.pid)}
        for p in self.descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive[p.pid] = p
        return list(alive.values())


@contextlib.contextmanager
def serving(server: PrefectServer, tmp_path: Path, label: str, *args: str, **env: str) -> Iterator[Serve]:
    """Run `pipeline serve ARGS`; always stopped (SIGTERM, then SIGKILL of its group) when the block exits."""
    out, err = tmp_path / f"{label}.out", tmp_path / f"{label}.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "serve", *args],
            cwd=REPO,
            env=server.client_env(PREFECT_RUNNER_POLL_FREQUENCY="1", **env),
            stdin=subprocess.DEVNULL,
            stdout=fo,
            stderr=fe,
            start_new_session=True,
        )
    handle = Serve(proc, out, err)
    try:
        yield handle
    finally:
        handle.remember_descendants()
        stop_group(proc, signal.SIGTERM, timeout=30)
        for p in handle.survivors():
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


def wait_for_deployment(server: PrefectServer, name: str, *serves: Serve, timeout: float = 60) -> Any:
    from prefect.exceptions import ObjectNotFound

    def registered() -> Any:
        for s in serves:
            assert s.proc.poll() is None, f"pipeline serve exited with {s.proc.returncode}:\n{s.output()[-4000:]}"
        with server.client() as client:
            try:
                return client.read_deployment_by_name(f"ingest/{name}")
            except ObjectNotFound:
                return None

    return wait_until(registered, timeout, what=f"deployment ingest/{name}")


def wait_for_completed(server: PrefectServer, deployment: Any, n: int, *serves: Serve, also: Any = None) -> None:
    """Until `n` runs of the deployment are COMPLETED (and `also(client)` holds); fails fast on a failed run."""

    def done() -> bool:
        for s in serves:
            assert s.proc.poll() is None, f"pipeline serve exited with {s.proc.returncode}:\n{s.output()[-4000:]}"
        with server.client() as client:
            failed = deployment_runs(client, deployment.id, "FAILED", "CRASHED")
            assert not failed, [(r.name, r.state.message) for r in failed]
            return count_runs(client, deployment.id, "COMPLETED") >= n and (also is None or also(client))

    wait_until(done, RUN_TIMEOUT, interval=1.0, what=f"{n} completed runs of {deployment.name}")


def stop(*serves: Serve, timeout: float = 30) -> list[tuple[int, float]]:
    """SIGTERM to each serve process only (as `kill PID` or a service manager does); (exit code, seconds) each."""
    t0 = time.monotonic()
    for s in serves:
        s.remember_descendants()
        s.proc.send_signal(signal.SIGTERM)
    results = []
    for s in serves:
        try:
            rc = s.proc.wait(max(0.1, timeout - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            pytest.fail(f"pipeline serve did not exit within {timeout} s of SIGTERM:\n{s.output()[-4000:]}")
        results.append((rc, time.monotonic() - t0))
    return results


def assert_stopped_cleanly(serve: Serve, rc: int) -> None:
    assert rc == 0, serve.output()[-4000:]
    try:
        wait_until(lambda: not serve.survivors(), 10, interval=0.2, what="serve's processes to exit")
    except TimeoutError:
        pytest.fail(f"processes of pipeline serve survived it: {[(p.pid, p.cmdline()) for p in serve.survivors()]}")
    output = serve.output()
    assert "Traceback" not in output, output[-6000:]
    assert "| ERROR" not in output, output[-6000:]


def assert_never_concurrent(runs: list[Any]) -> None:
    """No two runs were Running at the same time: their [start_time, end_time] intervals are disjoint."""
    spans = sorted((r.start_time, r.end_time, r.name) for r in runs if r.start_time is not None)
    for (s1, e1, n1), (s2, _e2, n2) in zip(spans, spans[1:], strict=False):
        assert e1 is not None and e1 <= s2, f"{n1} ran {s1}..{e1}, overlapping {n2} from {s2}"


def state_names(client: Any, flow_run_id: Any) -> list[str]:
    return [s.name for s in client.read_flow_run_states(flow_run_id)]


def test_serve_runs_on_schedule_one_at_a_time_and_stops_cleanly(
    server: PrefectServer, seeds: Path, warehouse: Path, tmp_path: Path
) -> None:
    """`pipeline serve --interval 5`: two scheduled runs complete, the second a no-op; SIGTERM exits 0, no orphans."""
    with serving(
        server, tmp_path, "serve", "--interval", "5", "--seeds", str(seeds), "--warehouse", str(warehouse)
    ) as s:
        deployment = wait_for_deployment(server, "scheduled", s)
        wait_for_completed(server, deployment, 2, s)
        s.remember_descendants()

        # The deployment as the Prefect UI shows it: schedule, parameters, concurrency limit 1 (ENQUEUE).
        with server.client() as client:
            deployment = client.read_deployment(deployment.id)
            completed = deployment_runs(client, deployment.id, "COMPLETED")
            arts = {r.id: artifacts(client, r.id) for r in completed}
        assert [sch.schedule.interval for sch in deployment.schedules] == [timedelta(seconds=5)]
        assert all(sch.active for sch in deployment.schedules)
        assert deployment.parameters["seeds"] == str(seeds)
        assert deployment.parameters["warehouse"] == str(warehouse)
        assert deployment.global_concurrency_limit is not None
        assert deployment.global_concurrency_limit.limit == 1
        assert deployment.concurrency_options.collision_strategy.value == "ENQUEUE"

        # Every completed run published its summary and rejects artifacts.
        for run in completed:
            assert re.fullmatch(r"ingest-seeds-\d{8}T\d{6}Z", run.name), run.name
            assert {"ingest-summary", "ingest-rejects"} <= set(arts[run.id]), (run.name, sorted(arts[run.id]))
            assert arts[run.id]["ingest-rejects"].data == "No quarantined files."
        summarized = {
            arts[r.id]["ingest-summary"].data.splitlines()[0].removeprefix("# Ingest run ") for r in completed
        }
        assert_never_concurrent(completed)

        # The warehouse: healthy, one load_runs row per completed run, the second run changed nothing.
        status = run_cli("status", "--warehouse", str(warehouse), "--format", "json")
        info = json.loads(status.stdout)
        assert info["healthy"] is True, info
        con = open_catalog(warehouse)
        try:
            loads = con.execute(
                "select run_id, status, files_new, files_changed from load_runs order by started_at"
            ).fetchall()
        finally:
            con.close()
        assert len(loads) >= 2, loads
        assert [row[1] for row in loads] == ["completed"] * len(loads)
        assert loads[0][2] == 15, loads  # the shipped seeds, all new
        assert (loads[1][2], loads[1][3]) == (0, 0), loads  # nothing new or changed: a no-op
        assert summarized <= {row[0] for row in loads}, (summarized, loads)

        [(rc, seconds)] = stop(s)
        assert_stopped_cleanly(s, rc)
        assert seconds < 30

    with server.client() as client:
        stuck = deployment_runs(client, deployment.id, "PENDING", "RUNNING", "CANCELLING")
    assert not stuck, [(r.name, r.state_name) for r in stuck]  # an in-flight run is Cancelled, never left Running


def test_overlapping_runs_wait_for_the_slot(
    server: PrefectServer, seeds: Path, warehouse: Path, tmp_path: Path
) -> None:
    """Runs that come due while one is running wait (ENQUEUE) and then complete; never two at once.

    Each run holds the warehouse lock for 4 s (faults.SLEEP_HOLDING_LOCK) plus ~3 s of process
    start, so with `--interval 3` every run overlaps the next one's due time. Two `pipeline serve`
    processes serve the same deployment (a double start, or two hosts): a single serve process never
    starts a second run while its own is running (its runner has limit=1 and skips due runs, which go
    Late), so only a second process makes the *deployment's* concurrency limit decide. What happens:
    the idle process claims the due run, the server refuses it the slot and reschedules it as
    `AwaitingConcurrencySlot` (retried every 2 s here, 30 s by default); once the running one ends,
    a waiting run gets the slot and completes. No run is Cancelled, none fails on the warehouse lock
    (it would, with exit 75, if two ever ran at once), and start/end times never overlap.
    """
    args = ("--interval", "3", "--name", "overlap-enqueue", "--seeds", str(seeds), "--warehouse", str(warehouse))
    with (
        serving(server, tmp_path, "serve-a", *args, **{faults.SLEEP_HOLDING_LOCK: SLEEP_SECONDS}) as a,
        serving(server, tmp_path, "serve-b", *args, **{faults.SLEEP_HOLDING_LOCK: SLEEP_SECONDS}) as b,
    ):
        deployment = wait_for_deployment(server, "overlap-enqueue", a, b)

        def a_waiter_completed(client: Any) -> bool:
            return any(
                "AwaitingConcurrencySlot" in state_names(client, r.id)
                for r in deployment_runs(client, deployment.id, "COMPLETED")
            )

        wait_for_completed(server, deployment, 2, a, b, also=a_waiter_completed)
        with server.client() as client:
            started = deployment_runs(client, deployment.id, "PENDING", "RUNNING", "COMPLETED", "CANCELLED", "FAILED")
            cancelled = deployment_runs(client, deployment.id, "CANCELLED")
        assert not cancelled, [(r.name, r.state.message) for r in cancelled]
        assert_never_concurrent(started)
        for s, (rc, _) in zip((a, b), stop(a, b), strict=True):
            assert_stopped_cleanly(s, rc)

    # Stopping mid-run (the in-flight run is Cancelled) leaves the warehouse unlocked and intact.
    run_cli("run", "--orchestrator", "none", "--quiet", "--seeds", str(seeds), "--warehouse", str(warehouse))
    info = json.loads(run_cli("status", "--warehouse", str(warehouse), "--format", "json").stdout)
    assert info["healthy"] is True, info


def test_overlapping_run_is_cancelled_with_collision_cancel(
    server: PrefectServer, seeds: Path, warehouse: Path, tmp_path: Path
) -> None:
    """`--collision cancel`: a run that comes due while one is running is Cancelled by the server.

    Same setup as the ENQUEUE test (runs of ~8 s, `--interval 3`, two serve processes on one
    deployment, named differently from the other tests' deployments). The idle process claims the
    due run; the server answers Cancelled, "Deployment concurrency limit reached." The running
    run still completes, and no two runs overlap. (With one serve process the runner skips due
    runs while busy; the server cancels such a run only once it is marked Late, 15 s after it was
    due, and only if the slot is still taken then; shorter collisions just run late.)
    """
    args = ("--interval", "3", "--name", "overlap-cancel", "--collision", "cancel")
    args += ("--seeds", str(seeds), "--warehouse", str(warehouse))
    with (
        serving(server, tmp_path, "serve-a", *args, **{faults.SLEEP_HOLDING_LOCK: SLEEP_SECONDS}) as a,
        serving(server, tmp_path, "serve-b", *args, **{faults.SLEEP_HOLDING_LOCK: SLEEP_SECONDS}) as b,
    ):
        deployment = wait_for_deployment(server, "overlap-cancel", a, b)
        assert deployment.concurrency_options.collision_strategy.value == "CANCEL_NEW"
        assert deployment.global_concurrency_limit.limit == 1
        wait_for_completed(server, deployment, 1, a, b, also=lambda c: count_runs(c, deployment.id, "CANCELLED") >= 1)
        with server.client() as client:
            started = deployment_runs(client, deployment.id, "PENDING", "RUNNING", "COMPLETED", "FAILED")
            cancelled = deployment_runs(client, deployment.id, "CANCELLED")
        assert {r.state.message for r in cancelled} == {"Deployment concurrency limit reached."}
        assert all(r.start_time is None or r.start_time == r.end_time for r in cancelled)  # never ran
        assert_never_concurrent(started)
        for s, (rc, _) in zip((a, b), stop(a, b), strict=True):
            assert_stopped_cleanly(s, rc)
