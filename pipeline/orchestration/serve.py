"""`pipeline serve`: the ingest flow as a scheduled Prefect deployment, served by this process.

One run at a time: the deployment has a concurrency limit of 1 (a run that comes
due while another runs is queued, or cancelled with --collision cancel), and the
warehouse lock stays the last fence. SIGTERM and Ctrl-C stop serving cleanly.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

DEFAULT_CRON = "0 * * * *"  # hourly


def _sigint_as_sigterm(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C takes Prefect's SIGTERM path, which cancels the in-flight run instead of leaving it Running."""
    signal.raise_signal(signal.SIGTERM)


def deployment_options(cron: str | None, interval: float | None, collision: str) -> dict[str, Any]:
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    strategy = ConcurrencyLimitStrategy.CANCEL_NEW if collision == "cancel" else ConcurrencyLimitStrategy.ENQUEUE
    options: dict[str, Any] = {"concurrency_limit": ConcurrencyLimitConfig(limit=1, collision_strategy=strategy)}
    if interval is not None:
        options["interval"] = interval
    else:
        options["cron"] = cron or DEFAULT_CRON
    return options


def serve(parameters: dict[str, Any], cron: str | None, interval: float | None, name: str, collision: str) -> None:
    from prefect import serve as prefect_serve
    from prefect.deployments.runner import RunnerDeployment

    from pipeline.orchestration.flow import ingest

    deployment = ingest.to_deployment(name=name, parameters=parameters, **deployment_options(cron, interval, collision))
    if not isinstance(deployment, RunnerDeployment):  # in a sync context it never is a coroutine
        raise TypeError(f"expected a RunnerDeployment, got {type(deployment).__name__}")
    signal.signal(signal.SIGINT, _sigint_as_sigterm)
    # The runner normally claims runs 10 s ahead; with short intervals that collides with the
    # run still holding the concurrency slot. Claim them just before they are due instead.
    prefect_serve(deployment, pause_on_shutdown=False, print_starting_message=True, limit=1, prefetch_seconds=1)
