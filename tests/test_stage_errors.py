"""A failing stage's one line: the stage, the run, what the next run does, the cause in words, its exit code."""

from __future__ import annotations

import pytest
from botocore.exceptions import NoCredentialsError  # known by name in pipeline.errors (not imported there)
from duckdb import OutOfMemoryException

from pipeline.errors import ChecksFailed, ConfigError, PipelineError, StageFailed, WarehouseLocked, explain

RETRIES = "the next run retries it"
NEEDS_FIX = "the next run fails the same way until this is fixed"


@pytest.mark.parametrize(
    ("cause", "code", "then", "why"),
    [
        (PipelineError("injected failure"), 1, RETRIES, "injected failure"),
        (WarehouseLocked("this run lost its writer lease"), 75, RETRIES, "this run lost its writer lease"),
        (ChecksFailed("post-load checks failed"), 3, NEEDS_FIX, "post-load checks failed"),
        (ConfigError("memory limit 'x'"), 2, NEEDS_FIX, "memory limit 'x'"),
        (OSError(5, "Input/output error"), 1, RETRIES, "storage failed: [Errno 5] Input/output error"),
        (NoCredentialsError(), 2, NEEDS_FIX, "no S3 credentials found; they are read"),
        (OutOfMemoryException("could not allocate"), 1, NEEDS_FIX, "raise the memory_limit setting, PIPELINE_MEMORY"),
        (KeyError("x"), 1, RETRIES, "unexpected error: KeyError: 'x' (rerun with --debug for details)"),
    ],
)
def test_stage_failed_says_where_what_next_and_why(cause: Exception, code: int, then: str, why: str) -> None:
    failure = StageFailed("build", "20261202T120000000000Z-abcd", cause)
    text = str(failure)
    assert text.startswith(f"stage build of run 20261202T120000000000Z-abcd failed, nothing was published ({then}): ")
    assert why in text and "\n" not in text
    assert failure.exit_code == code and failure.cause is cause and failure.stage == "build"


def test_explain_is_one_line() -> None:
    assert explain(PipelineError("a\n  b")) == "a b"
    assert explain(NoCredentialsError()).endswith("AWS_PROFILE, ~/.aws/credentials or ~/.aws/config")
