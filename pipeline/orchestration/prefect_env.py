"""Prefect defaults for this project, applied before Prefect is imported.

No telemetry or analytics (there is no network, and the attempt logs an ERROR),
and a quiet console: INFO logs still reach the Prefect API (and so the UI),
but the terminal shows only warnings and errors, next to the CLI's own
progress and summary. Any variable the user sets wins over these defaults.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # the telemetry heartbeat logs an ERROR without network
    "DO_NOT_TRACK": "1",  # client-side analytics
    "PREFECT_SERVER_EPHEMERAL_ENABLED": "true",  # a user profile without an API URL must not break `run`
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",  # a fresh database under load needs ~10 s
    # Persist task-run states promptly (the temporary server records them from events).
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",  # an integer: 0.5 becomes int(0.5) = 0 upstream, a busy loop that burns a core
}
QUIET = {
    # Mutes Prefect's terminal handler only (also in the temporary server's process): run logs
    # still reach the API and the UI, and the CLI reports failures itself in one line.
    # PREFECT_LOGGING_LEVEL would instead drop INFO logs before they reach the API.
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
}


def apply_defaults(debug: bool = False) -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not debug:
        for key, value in QUIET.items():
            os.environ.setdefault(key, value)


def require_api(what: str) -> None:
    """Distributed runs need a real Prefect API: in ephemeral mode every worker would start its own server."""
    from prefect.settings import get_current_settings

    from pipeline.errors import ConfigError

    if not get_current_settings().api.url:
        raise ConfigError(
            f"{what} needs a Prefect server: set PREFECT_API_URL (e.g. run `prefect server start` and "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api), or pass --orchestrator none"
        )


def configured_api() -> str | None:
    """The Prefect API this process would use (PREFECT_API_URL or the active profile), or None."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


def local_server_wanted() -> bool:
    """Runs without an API use the long-lived local server, unless PIPELINE_LOCAL_SERVER=0 (Prefect's
    temporary in-process server then, as Prefect does by default)."""
    return os.environ.get("PIPELINE_LOCAL_SERVER", "1").strip().lower() not in ("0", "false", "no", "off")


@contextlib.contextmanager
def using_api(url: str | None) -> Iterator[None]:
    """Talk to ``url`` for the duration (no change when None)."""
    if url is None:
        yield
        return
    from prefect.settings import temporary_settings

    with temporary_settings(updates={"api.url": url}):
        yield


def flow_run_url(api: str | None, flow_run_id: str) -> str | None:
    """The UI page of a flow run on a self-hosted server (``.../api`` -> ``.../runs/flow-run/<id>``)."""
    if not api or not api.rstrip("/").endswith("/api"):
        return None
    return f"{api.rstrip('/')[: -len('/api')]}/runs/flow-run/{flow_run_id}"
