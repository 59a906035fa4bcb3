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


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def deployment_options(cron: str | None, interval: float | None, collision: str) -> dict[str, Any]:
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    strategy = ConcurrencyLimitStrategy.CANCEL_NEW if collision == "cancel" else ConcurrencyLimitStrategy.ENQUEUE
    options: dict[str, Any] = {
        "global_limit": ConcurrencyLimitConfig(limit=1, collision_strategy=strategy),
        "limit": 1,  # this process never runs two flow runs at once either
    }
    if interval is not None:
        options["interval"] = interval
    else:
        options["cron"] = cron or DEFAULT_CRON
    return options


def serve(parameters: dict[str, Any], cron: str | None, interval: float | None, name: str, collision: str) -> None:
    from .flow import ingest

    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        ingest.serve(
            name=name,
            parameters=parameters,
            pause_on_shutdown=False,
            print_starting_message=True,
            **deployment_options(cron, interval, collision),
        )
    except KeyboardInterrupt:
        pass
