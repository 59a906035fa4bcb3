"""Why a file is not loaded: one small value type shared by every stage."""

from __future__ import annotations

from dataclasses import dataclass

# Stage names, in the order a file passes through them.
STAGES = ("read", "decode", "frontmatter", "yaml", "contract", "duplicate")


@dataclass(frozen=True)
class Problem:
    """A reason to quarantine a file, precise enough for a person to fix it."""

    stage: str
    reason: str
    message: str
    line: int | None = None
    column: int | None = None
    field: str | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}")


class ProblemError(Exception):
    """Carries a Problem out of deep code; never escapes the extract stage."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem
