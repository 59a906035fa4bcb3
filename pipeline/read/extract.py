"""Read one seed file and turn it into rows or a reason to quarantine it.

Stages, each with its own reason codes: read (size cap, I/O), decode (UTF-8,
control characters), frontmatter (delimiters found, a mapping), yaml (strict
loader), contract (types, required fields). python-frontmatter's handler API
does the splitting and calls our strict loader; its ``parse`` helper is not used
because it returns empty metadata instead of an error for several broken inputs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from pipeline.read import fast_yaml
from pipeline.read.contract import Checked, check_document
from pipeline.read.normalize import Rows, Source, normalize
from pipeline.read.problems import Problem, ProblemError
from pipeline.read.strict_yaml import StrictYAMLHandler

# C0 controls but tab/LF/CR, DEL, and C1 controls (U+0085 NEL is a line break to YAML 1.1, so
# a quoted title containing it would silently become a space).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Bytes that cannot be part of a _CONTROL match: all but C0 controls (tab, LF, CR kept), DEL, and
# 0xC2 (the UTF-8 lead byte of C1 controls). Deleting them is a C-speed scan; what remains decides
# whether the regex needs to run at all.
_PLAIN_BYTES = bytes(b for b in range(256) if not (b < 0x20 and b not in (9, 10, 13)) and b not in (0x7F, 0xC2))
# Line and paragraph separators: also line breaks to YAML 1.1; harmless in a Markdown body.
_YAML_BREAKS = re.compile(r"[\u2028\u2029]")
_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t]*\r?\n)+")
_fast_yaml = False


def enable_fast_yaml() -> None:
    """Let ``fast_yaml`` answer the documents it is sure about, in this process.

    Only crash-isolated parser processes call this (rapidyaml is C++ and prints to stderr);
    everywhere else every document takes the strict loader. Results are the same either way.
    """
    global _fast_yaml
    _fast_yaml = fast_yaml.available()


@dataclass(frozen=True)
class Loaded:
    rows: Rows
    unknown_keys: frozenset[str]


def read_capped(path: str, max_bytes: int) -> bytes:
    """Read at most ``max_bytes``; a larger file is refused, never truncated."""
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ProblemError(Problem("too_large", f"file is larger than the {max_bytes:,}-byte cap (max_file_bytes)"))
    return data


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def decode(data: bytes) -> str:
    """Strict UTF-8 (a leading BOM is allowed); control characters are refused."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        good = data[: exc.start].decode("utf-8", errors="replace")
        line, col = _position(good, len(good))
        raise ProblemError(
            Problem(
                "invalid_utf8",
                f"bytes are not valid UTF-8 at byte {exc.start} (line {line}, column {col}); save the file as UTF-8",
                line,
                col,
            )
        ) from None
    bad = _CONTROL.search(text) if data.translate(None, _PLAIN_BYTES) else None
    if bad:
        line, col = _position(text, bad.start())
        raise ProblemError(
            Problem(
                "control_character",
                f"control character U+{ord(bad.group()):04X} at line {line}, column {col}; remove it",
                line,
                col,
            )
        )
    return text


def split_frontmatter(text: str) -> tuple[object, str]:
    """Find the frontmatter block and load it strictly; return (metadata, body)."""
    stripped = text.lstrip()
    offset_lines = text.count("\n", 0, len(text) - len(stripped))
    probe = StrictYAMLHandler()
    if not probe.detect(stripped):
        raise ProblemError(
            Problem(
                "no_frontmatter",
                "no frontmatter: the file must start with a '---' line, then YAML, then a closing '---' line",
                offset_lines + 1,
                1,
            )
        )
    try:
        fm, body = probe.split(stripped)
    except ValueError:
        raise ProblemError(
            Problem(
                "unclosed_frontmatter",
                "frontmatter is not closed: add a '---' line after the YAML",
                offset_lines + 1,
                1,
            )
        ) from None
    opener = probe.FM_BOUNDARY.match(stripped)  # detect() found it, so it matches
    first_line = offset_lines + (stripped.count("\n", 0, opener.end()) if opener else 0)
    odd = _YAML_BREAKS.search(fm) if "\u2028" in fm or "\u2029" in fm else None
    if odd:
        line, col = _position(fm, odd.start())
        raise ProblemError(
            Problem(
                "control_character",
                f"U+{ord(odd.group()):04X} (a line break to YAML) at line {line + first_line}, column {col}; "
                "remove it or write it as an escape in a double-quoted string",
                line + first_line,
                col,
            )
        )
    meta = fast_yaml.load_fast(fm) if _fast_yaml else None
    if meta is None:
        meta = StrictYAMLHandler(first_line).load(fm)
    if not isinstance(meta, dict):
        kind = "empty" if meta is None else f"a {type(meta).__name__}, not a mapping"
        raise ProblemError(
            Problem(
                "frontmatter_not_mapping",
                f"frontmatter is {kind}; expected 'key: value' lines such as 'title: ...'",
                first_line + 1,
                1,
            )
        )
    return meta, _LEADING_BLANK_LINES.sub("", body).rstrip()


def extract(data: bytes, source: Source, run_id: str) -> Loaded | Problem:
    """Bytes of one file -> rows, or the first reason it cannot be loaded."""
    try:
        meta, body = split_frontmatter(decode(data))
    except ProblemError as exc:
        return exc.problem
    checked = check_document(meta)
    if not isinstance(checked, Checked):
        return _summarize(checked)
    return Loaded(normalize(checked, body, source, run_id), checked.unknown_keys)


def _summarize(problems: list[Problem]) -> Problem:
    """One reject row per file: the first problem, with a count of the others."""
    first = problems[0]
    if len(problems) == 1:
        return first
    others = "; ".join(p.message for p in problems[1:4])
    more = f" (+{len(problems) - 4} more)" if len(problems) > 4 else ""
    message = f"{first.message} — also: {others}{more}"
    return Problem(first.reason, message, first.line, first.column, first.field)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
