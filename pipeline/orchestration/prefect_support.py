"""Small Prefect helpers for the CLI: run a flow without the heartbeat join, and wait for records.

Task-run states reach the server as events; a process that exits right after its flow
returns can stop the temporary server before it has written them. We drain the client's
events and poll until every task run of the flow run is recorded in a final state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from uuid import UUID


def call_flow(fn: Callable[..., Any], temporary_server: bool, **params: Any) -> Any:
    """Call a flow and make sure its task runs get recorded, also when it fails (a failed task must show).

    Task-run states travel as events. A server that outlives this process (the local server, or
    any PREFECT_API_URL) records them once it has them, so draining this process's events is
    enough. Prefect's temporary server stops with this process: there we wait until the records
    are written. The run heartbeat is off (it only delays the end of a one-shot run by ~1 s).
    Returns the flow's result, or raises the exception that failed it.
    """
    from prefect.events.worker import EventsWorker
    from prefect.settings import temporary_settings

    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        state = fn(**params, return_state=True)
    flow_run_id = str(state.state_details.flow_run_id)
    try:
        result = state.result()  # raises what failed the flow
    except BaseException:
        if temporary_server:
            wait_for_task_run_records(flow_run_id)
        else:
            EventsWorker.drain_all(timeout=30)
        raise
    if temporary_server:
        expected = result.get("task_runs") if isinstance(result, dict) else None
        wait_for_task_run_records(flow_run_id, expected=expected)
    else:
        EventsWorker.drain_all(timeout=30)
    return result


def wait_for_task_run_records(
    flow_run_id: str, expected: int | None = None, timeout: float = 30.0, settle: float = 0.5
) -> int:
    """Block until the flow run's task runs are recorded in a final state; returns their count.

    With ``expected`` (the flow knows how many tasks it ran) it returns as soon as that many are
    final; otherwise it waits until the count has been stable for ``settle`` seconds.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=timeout)
    flt = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
    deadline = time.monotonic() + timeout
    last, stable_since = -1, time.monotonic()
    with get_client(sync_client=True) as client:
        while True:
            runs: list[Any] = []
            offset = 0
            while True:
                page = client.read_task_runs(flow_run_filter=flt, limit=200, offset=offset)
                runs += page
                offset += 200
                if len(page) < 200:
                    break
            done = all(r.state is not None and r.state.is_final() for r in runs)
            if len(runs) != last:
                last, stable_since = len(runs), time.monotonic()
            if done and runs:
                if expected is not None and len(runs) >= expected:
                    return len(runs)
                if expected is None and time.monotonic() - stable_since >= settle:
                    return len(runs)
            if time.monotonic() > deadline:
                return len(runs)
            time.sleep(0.05 if expected is not None else 0.2)
