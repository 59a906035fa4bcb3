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


def call_flow(fn: Callable[..., Any], **params: Any) -> Any:
    """Call a flow with the run heartbeat off (it only delays the end of a one-shot run by ~1 s)."""
    from prefect.settings import temporary_settings

    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        return fn(**params)


def wait_for_task_run_records(flow_run_id: str, timeout: float = 30.0, settle: float = 0.5) -> int:
    """Block until the flow run's task runs are all recorded in a final state; returns their count."""
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
            if done and runs and time.monotonic() - stable_since >= settle:
                return len(runs)
            if time.monotonic() > deadline:
                return len(runs)
            time.sleep(0.2)
