"""One root error class for the package, with the exit code a CLI should use.

Users see ``str(error)`` as one line; tracebacks only with ``--debug``.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error this package raises on purpose."""

    exit_code = 1


class ConfigError(PipelineError):
    """A setting or command-line option is unusable (missing folder, bad pattern)."""

    exit_code = 2


class WarehouseLocked(PipelineError):
    """Another run holds the warehouse lock; this run did nothing."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class ChecksFailed(PipelineError):
    """Post-load checks or accounting failed; the previous snapshot stays published."""

    exit_code = 3


class QueryError(PipelineError):
    """A query was refused or DuckDB rejected it."""

    exit_code = 4


class NoWarehouse(PipelineError):
    """The warehouse folder holds no published snapshot yet."""

    exit_code = 5
