"""Prefect defaults for this project, applied before Prefect is imported.

No telemetry or analytics (there is no network, and the attempt logs an ERROR),
and a quiet console: INFO logs still reach the Prefect API (and so the UI),
but the terminal shows only warnings and errors, next to the CLI's own
progress and summary. Any variable the user sets wins over these defaults.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}
QUIET = {
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
}


def apply_defaults(debug: bool = False) -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not debug:
        for key, value in QUIET.items():
            os.environ.setdefault(key, value)
