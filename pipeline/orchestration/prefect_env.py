"""Prefect defaults for this project, applied before Prefect is imported.

No telemetry or analytics (there is no network, and the attempt logs an ERROR),
and a quiet console: INFO logs still reach the Prefect API (and so the UI),
but the terminal shows only warnings and errors, next to the CLI's own
progress and summary. Any variable the user sets wins over these defaults.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # the telemetry heartbeat logs an ERROR without network
    "DO_NOT_TRACK": "1",  # client-side analytics
    "PREFECT_SERVER_EPHEMERAL_ENABLED": "true",  # a user profile without an API URL must not break `run`
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",  # a fresh database under load needs ~10 s
    # Persist task-run states promptly (the temporary server records them from events).
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "0.5",
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
