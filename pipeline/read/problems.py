"""Why a file is not loaded: the registry of reject reasons, and the one value type every stage uses.

Reason codes are a public contract (the `rejects` table, alerts, dashboards): each is declared
once here with its stage, what a person should do about it, and whether an unchanged file is
read again by the next run. ``docs/rejects.md`` is generated from ``REASONS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# Stages, in the order a file passes through them.
STAGES = ("read", "decode", "frontmatter", "yaml", "contract", "duplicate")


class Retry(Enum):
    """Whether the next run reads a rejected file again although its bytes did not change."""

    NEVER = "no: only a change to the file reloads it"
    ALWAYS = "yes: the cause may be outside the file (permissions, storage, a fixed parser)"
    IF_CAP_RAISED = "yes, when max_file_bytes has been raised above its size"
    EVERY_RUN = "decided again by every run's listing"


@dataclass(frozen=True)
class Reason:
    code: str
    stage: str
    action: str  # what a person should do about it
    retry: Retry = Retry.NEVER


REASONS: dict[str, Reason] = {
    r.code: r
    for r in (
        # read: the file itself
        Reason("too_large", "read", "split the file or raise max_file_bytes", Retry.IF_CAP_RAISED),
        Reason(
            "unreadable", "read", "fix the file's permissions or the storage; the next run tries again", Retry.ALWAYS
        ),
        Reason("bad_file_name", "read", "rename the file to valid UTF-8"),
        Reason("link_outside_seeds", "read", "copy the file into the seeds folder instead of linking to it"),
        Reason("not_regular_file", "read", "remove the FIFO, device or socket from the seeds folder"),
        Reason(
            "unlisted_folder",
            "read",
            "fix the folder's permissions or the storage; its files are kept as they were meanwhile",
            Retry.EVERY_RUN,
        ),
        Reason("unsafe_key", "read", "rename the object without empty, '.' or '..' path segments"),
        # decode: bytes to text
        Reason("invalid_utf8", "decode", "save the file as UTF-8"),
        Reason("control_character", "decode", "remove the control character (or escape it in a quoted string)"),
        # frontmatter: the --- block
        Reason("no_frontmatter", "frontmatter", "start the file with a '---' line, YAML, and a closing '---' line"),
        Reason("unclosed_frontmatter", "frontmatter", "add the closing '---' line after the YAML"),
        Reason("frontmatter_not_mapping", "frontmatter", "write the frontmatter as 'key: value' lines"),
        # yaml: the frontmatter's syntax and the features we refuse
        Reason("yaml_syntax", "yaml", "fix the YAML at the line and column given"),
        Reason("yaml_alias", "yaml", "write the value out in full instead of an anchor and alias"),
        Reason("yaml_tag", "yaml", "remove the explicit tag (quote the value if it is text)"),
        Reason("yaml_key", "yaml", "use plain text keys"),
        Reason("duplicate_key", "yaml", "keep one of the two keys"),
        Reason("nesting_too_deep", "yaml", "flatten the frontmatter (real seeds nest 4 levels)"),
        Reason("flow_question_mark", "yaml", "quote the value that starts with '?' inside [...] or {...}"),
        Reason(
            "parser_crash",
            "yaml",
            "simplify the file's YAML; report it if it is ordinary (the next run tries again)",
            Retry.ALWAYS,
        ),
        # contract: values against the document contract
        Reason("wrong_type", "contract", "give the field the kind of value the contract names"),
        Reason("unquoted_scalar", "contract", "quote the text"),
        Reason("bad_url", "contract", "give an absolute http(s) URL"),
        Reason("bad_integer", "contract", "give a whole number in range"),
        Reason("ambiguous_integer", "contract", "write the number without a leading zero"),
        Reason("bad_boolean", "contract", "write true or false"),
        Reason("bad_timestamp", "contract", "give an RFC 3339 / ISO 8601 date-time such as 2023-10-08T16:23:00Z"),
        Reason("missing_field", "contract", "add the required field"),
        Reason("empty_field", "contract", "give the field a value"),
        Reason("bad_domain", "contract", "give a domain such as wsj.com"),
        Reason(
            "unexpected_error",
            "contract",
            "report it with the file: the pipeline failed on it (the next run tries again)",
            Retry.ALWAYS,
        ),
        # duplicate: another file claims the same article
        Reason("duplicate_identity", "duplicate", "give the article its own webUrl, or delete one of the files"),
    )
}


def retried(retry: Retry) -> tuple[str, ...]:
    """Codes with this retry rule (the manifest's plan uses them)."""
    return tuple(code for code, r in REASONS.items() if r.retry is retry)


@dataclass(frozen=True)
class Problem:
    """A reason to quarantine a file, precise enough for a person to fix it."""

    reason: str
    message: str
    line: int | None = None
    column: int | None = None
    field: str | None = None

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unregistered reject reason {self.reason!r}: declare it in pipeline/read/problems.py")

    @property
    def stage(self) -> str:
        return REASONS[self.reason].stage

    def as_dict(self) -> dict[str, object]:
        return {
            "stage": self.stage,
            "reason": self.reason,
            "message": self.message,
            "line": self.line,
            "column": self.column,
            "field": self.field,
        }


class ProblemError(Exception):
    """Carries a Problem out of deep code; never escapes the extract stage."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def path_order(rel: str) -> bytes:
    """The order of seed paths everywhere (discovery, the duplicate rule): bytes of the UTF-8 path."""
    return rel.encode("utf-8", "surrogateescape")


def duplicate_identity(winner: str) -> Problem:
    """The duplicate rule: of the files that claim one identity URL, the smallest path (``path_order``) loads."""
    return Problem(
        "duplicate_identity",
        f"same identity URL as {winner!r}, which is loaded (the smallest path wins); "
        "give this article its own webUrl or delete one of the files",
        field="webUrl",
    )
