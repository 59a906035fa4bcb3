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


class StageFailed(PipelineError):
    """A stage of a run failed. The one line names the stage, the run and what the next run does
    (as dlt's ``PipelineStepFailed``); ``cause`` is the original error and sets the exit code."""

    def __init__(self, stage: str, run_id: str, cause: BaseException) -> None:
        self.stage, self.run_id, self.cause = stage, run_id, cause
        self.exit_code = exit_code(cause)
        then = "the next run retries it" if retried(cause) else "the next run fails the same way until this is fixed"
        super().__init__(f"stage {stage} of run {run_id} failed, nothing was published ({then}): {explain(cause)}")


# Where s3fs (botocore) looks for credentials, for the message when it finds none.
CREDENTIAL_SOURCES = (
    "--storage-option key=... --storage-option secret=... (or PIPELINE_STORAGE_OPTIONS), "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials or ~/.aws/config"
)
# Foreign errors known by name (their packages are not imported here): exit code and explanation.
_KNOWN = {
    "NoCredentialsError": (2, f"no S3 credentials found; they are read from {CREDENTIAL_SOURCES}"),
    "OutOfMemoryException": (
        1,
        "DuckDB ran out of its memory budget; raise the memory_limit setting, "
        "PIPELINE_MEMORY_LIMIT (default 512MB), e.g. PIPELINE_MEMORY_LIMIT=2GB",
    ),
}


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, PipelineError):
        return exc.exit_code
    return _KNOWN.get(type(exc).__name__, (1, ""))[0]


def retried(exc: BaseException) -> bool:
    """Whether running again can succeed as it is: not after bad settings, bad data or a missing key."""
    return not isinstance(exc, (ConfigError, ChecksFailed)) and type(exc).__name__ not in _KNOWN


def explain(exc: BaseException) -> str:
    """One line for any error a run can end with: ours as they are, well-known foreign ones in words."""
    name = type(exc).__name__
    if isinstance(exc, PipelineError):
        text = str(exc)
    elif name in _KNOWN:
        text = _KNOWN[name][1]
    elif isinstance(exc, OSError):
        text = f"storage failed: {exc}"
    else:
        text = f"unexpected error: {name}: {exc} (rerun with --debug for details)"
    return " ".join(text.split()) or name
