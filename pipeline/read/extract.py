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
import unicodedata
from dataclasses import dataclass

from pipeline.read import fast_yaml
from pipeline.read.contract import Checked, check_document
from pipeline.read.normalize import Rows, Source, normalize
from pipeline.read.problems import Problem, ProblemError
from pipeline.read.strict_yaml import StrictYAMLHandler
from pipeline.storage import seeds
from pipeline.storage.failures import Replaced, TooLarge

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


class YamlChoice:
    """Whether ``split_frontmatter`` tries the fast YAML path first in this process: this module's one
    piece of state, owned by the process (``PROCESS_YAML``) and set only through ``enable_fast_yaml``.

    Off unless enabled: only crash-isolated parser processes turn it on (rapidyaml is C++ and prints to
    stderr); everywhere else every document takes the strict loader. Results are the same either way.
    A caller that wants one loader whatever the process chose passes ``fast=`` to ``extract``.
    """

    __slots__ = ("fast",)

    def __init__(self) -> None:
        self.fast = False


PROCESS_YAML = YamlChoice()


def enable_fast_yaml(enabled: bool = True) -> None:
    """Let ``fast_yaml`` answer the documents it is sure about, in this process (see ``YamlChoice``)."""
    PROCESS_YAML.fast = enabled and fast_yaml.available()


@dataclass(frozen=True)
class Loaded:
    rows: Rows
    unknown_keys: frozenset[str]


def _too_large(max_bytes: int) -> ProblemError:
    return ProblemError(Problem("too_large", f"file is larger than the {max_bytes:,}-byte cap (max_file_bytes)"))


def _changed(what: str) -> ProblemError:
    """A file that is no longer what discovery listed. ``unreadable`` is retried by every run, so
    the next run's discovery decides what the path now is."""
    return ProblemError(Problem("unreadable", f"{what} after it was listed; not read (the next run looks again)"))


def read_seed(real_root: str, os_rel: str, linked: bool, max_bytes: int) -> bytes:
    """Read one local seed race-safely (``storage.seeds.read_capped``); a file that changed into something
    else after discovery, or is over the cap, becomes the reason it is not loaded."""
    try:
        return seeds.read_capped(real_root, os_rel, linked, max_bytes)
    except Replaced as exc:
        raise _changed(exc.what) from None
    except TooLarge:
        raise _too_large(max_bytes) from None


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


_CR_ONLY_OPENER = re.compile(r"-{3,}[ \t]*\r(?!\n)")
# Characters that show as nothing (or as a plain space) but are not the ASCII blanks a '---' line
# may have around it: format characters (U+200B, U+FEFF, U+2060, ...) and non-ASCII spaces (U+00A0).
_INVISIBLE_CATEGORIES = frozenset(("Cf", "Zs", "Zl", "Zp", "Mn", "Me", "Co", "Cn"))
_HANGUL_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")


def _invisible(ch: str) -> bool:
    return ch not in " \t" and (unicodedata.category(ch) in _INVISIBLE_CATEGORIES or ch in _HANGUL_FILLERS)


def _no_frontmatter(text: str, start: int) -> Problem:
    """Why the text (from ``start``, its first non-blank character) does not open with '---'.

    The generic answer hides two causes a person cannot see in an editor: CR-only line endings
    (the '---' line never ends, to the frontmatter parser) and an invisible character on the
    opening line; both are named, the character by its code point and file position.
    """
    line, _ = _position(text, start)
    if _CR_ONLY_OPENER.match(text, start):
        return Problem(
            "no_frontmatter",
            "no frontmatter: the file has CR-only line endings (classic Mac OS), so its '---' line never ends; "
            "save it with LF (or CRLF) line endings",
            line,
            1,
        )
    end = text.find("\n", start)
    first_line = text[start : len(text) if end < 0 else end]
    odd = next((i for i, ch in enumerate(first_line) if _invisible(ch)), None)
    if odd is not None and "---" in first_line:
        ch = first_line[odd]
        where_line, col = _position(text, start + odd)
        name = unicodedata.name(ch, "unnamed")
        return Problem(
            "no_frontmatter",
            f"no frontmatter: invisible character U+{ord(ch):04X} ({name}) at line {where_line}, column {col} "
            "on the opening '---' line; remove it",
            where_line,
            col,
        )
    return Problem(
        "no_frontmatter",
        "no frontmatter: the file must start with a '---' line, then YAML, then a closing '---' line",
        line,
        1,
    )


def split_frontmatter(text: str, fast: bool | None = None) -> tuple[object, str]:
    """Find the frontmatter block and load it strictly; return (metadata, body).

    ``fast``: try the fast YAML path first (the strict loader takes what it declines); None: as this
    process chose (``enable_fast_yaml``).
    """
    stripped = text.lstrip()
    offset_lines = text.count("\n", 0, len(text) - len(stripped))
    probe = StrictYAMLHandler()
    if not probe.detect(stripped):
        raise ProblemError(_no_frontmatter(text, len(text) - len(stripped)))
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
    if fast is None:
        fast = PROCESS_YAML.fast
    meta = fast_yaml.load_fast(fm) if fast else None
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


def extract(data: bytes, source: Source, run_id: str, fast: bool | None = None) -> Loaded | Problem:
    """Bytes of one file -> rows, or the first reason it cannot be loaded (``fast``: as for ``split_frontmatter``)."""
    try:
        meta, body = split_frontmatter(decode(data), fast)
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
