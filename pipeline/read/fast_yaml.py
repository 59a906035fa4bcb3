"""A fast path for the common frontmatter: rapidyaml parses, its JSON emitter hands the tree to
Python's C ``json`` decoder. About 2-3× faster than the strict libyaml loader per document.

The strict loader (``strict_yaml.load_strict``) stays the authority: this path answers only
documents it is sure about and returns ``None`` for everything else, so that every refusal,
message and position comes from the strict loader. ``decline_reason(text)`` says why a document
is left to the strict loader. "Sure" is three layers, each closing a place where rapidyaml and
libyaml were seen (or could plausibly) differ, on the YAML that real writers produce (PyYAML,
ruamel.yaml, js-yaml, npm ``yaml``: escapes, folded and block scalars, flow style, ``[]``):

- a screen of the text: document markers, a BOM or non-character inside, a lone carriage return,
  input deep enough to need the strict loader's depth screen, a document that starts with an
  indicator, and tabs next to structure (a separating or indenting tab);
- rapidyaml's tree, read only when the text or the JSON gives a reason: any anchor, alias or tag
  (``&``, ``*`` or ``!`` starting a token; they vanish from rapidyaml's JSON); a flow collection
  when the text has ``'?x'`` after a flow indicator (libyaml reads an explicit key) or a ``:``
  next to one (``[:x]``, ``[x:]``) or a value starting with ``?`` or ``:`` (``{a: ?x}``): rapidyaml
  reads text or a key, libyaml refuses; plain scalars
  that rapidyaml reads differently: ``~``, ``Null``, ``NULL`` (null to libyaml, text here), a
  start with ``@`` or a backquote (reserved: libyaml refuses), ``nan``/``inf`` spellings (the
  emitter rewrites them as ``.nan``/``.inf``);
- the decoded result: a float the emitter may have rewritten (``12.`` → ``12.0``, ``.5`` → ``0.5``),
  a duplicate key, an empty or null-spelled key (the strict loader refuses null keys), a top level
  that is not a mapping. Plain numbers keep their text (``parse_int``/``parse_float``), JSON
  ``true``/``false`` (only from plain ``true``/``false``) go back to their text.

Equivalence on everything the path answers is a differential test run in CI
(``tests/test_fast_yaml.py``: hostile corpus, seeds, generated and mutated documents, and the five
real writers in block and flow style on property-generated articles).
rapidyaml is C++ that prints its parse errors to stderr and could, on some input, crash the
process: the caller enables this path only in crash-isolated parser processes
(``engine.parse``), where stderr is silenced around the call.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from pipeline.read.strict_yaml import _looks_deep

try:  # an optional accelerator: without it every document takes the strict path
    import ryml
except ImportError:  # pragma: no cover - rapidyaml is a declared dependency
    ryml = None

# Sent to the strict loader wherever they are, with the reason decline_reason gives.
_ALWAYS = (
    ("\n---", "a document marker"),
    ("\n...", "a document marker"),
    ("\ufeff", "a BOM inside the document"),
    ("\ufffe", "a non-character"),
    ("\uffff", "a non-character"),
)
_INDICATORS = frozenset("&*!@`%?|>-:#'\".[]}")  # a document may not start with one of these here
_LONE_CR = re.compile(r"\r(?!\n)")
# '&', '*' or '!' starting a token (after white space, ',', ':', '?', '-', '[' or '{'), inside quotes
# or not: only a reason to read the tree's anchor, alias and tag bits.
_PROPERTY = re.compile(r"[&*!](?<=[\s,:?\[{-].)")
# In a block document, a line with a flow collection after '- ' or 'key: ' and more after it ('- {} x:',
# '- {e} x:'), or a flow collection left open on such a line and more after a ']' or '}' further down
# ('- {a,\n   b} c: d'): rapidyaml reads on, libyaml refuses. (A flow collection alone on its line with
# more after it is refused by both.) Found from the rare ']' or '}' followed by more (``_flow_then``).
_CLOSE_THEN = re.compile(r"[\]}][ \t]*[^\s#,\]}]")
_JUNK = re.compile(r"[ \t]*[^\s#,\]}]")
_FLOW_LINE = re.compile(  # from a line break: a flow collection after '- ' or 'key: ', closed, then more
    r"\n[ \t]*(?:(?:-[ \t]+)+(?:[^\s:#'\"][^\n:#'\"]*:[ \t]+)?|[^\s:#'\"][^\n:#'\"]*:[ \t]+)[\[{]"
    r"(?:[^\n'\"]|'[^'\n]*'|\"(?:[^\"\\\n]|\\.)*\")*[\]}][ \t]*[^\s#,\]}]"
)
# A line whose flow collection stays open.
_OPEN_FLOW_LINE = re.compile(
    r"\n[ \t]*(?:(?:-[ \t]+)+(?:[^\s:#'\"][^\n:#'\"]*:[ \t]+)?|[^\s:#'\"][^\n:#'\"]*:[ \t]+)[\[{]"
    r"(?:[^\n'\"\]}]|'[^'\n]*'|\"(?:[^\"\\\n]|\\.)*\")*\n"
)


def _flow_then(nl: str) -> bool:
    """Whether a ']' or '}' with more after it on its line closes a flow collection that began after '- '
    or 'key: ' on that line, or closes one left open on an earlier line (``nl``: the text after a line
    break). Only a ']' or '}' with more after it (rare) starts the search."""
    found = False
    for match in _CLOSE_THEN.finditer(nl):
        found = True
        if _FLOW_LINE.match(nl, nl.rfind("\n", 0, match.start())) is not None:
            return True
    if not found:
        return False
    for match in _OPEN_FLOW_LINE.finditer(nl):  # the next line with a ']' or '}': more after one of them?
        at = match.end()
        closes = [i for i in (nl.find("]", at), nl.find("}", at)) if i >= 0]
        if not closes:
            continue
        start = nl.rfind("\n", 0, min(closes)) + 1
        end = nl.find("\n", start)
        line = nl[start:] if end < 0 else nl[start:end]
        if any(c in "]}" and _JUNK.match(line, i + 1) is not None for i, c in enumerate(line)):
            return True
    return False


# Text that counts only when rapidyaml's tree has a non-empty flow collection: a ':' right before ',',
# ']' or '}' ('[x:]', '{x:}': libyaml refuses, rapidyaml reads a key); a line that starts with ':' (a key
# and its ':' on two lines: libyaml refuses); '#' right after ']' or '}'; '?' after '[', '{' or ',' and
# before a line break.
_OPENS_FLOW = re.compile(r"[\[{](?![ \t]*[\]}])")
_LINE_COLON = re.compile(r"\n[ \t]*:")
_QUESTION_EOL = re.compile(r"\?[ \t]*(?:\r?\n|$)")


def _flow_text(text: str) -> bool:
    """The flow constructs above, anywhere in the text."""
    if ":]" in text or ":," in text or ":}" in text or "]#" in text or "}#" in text:
        return True
    if _LINE_COLON.search(text) is not None:
        return True
    for match in _QUESTION_EOL.finditer(text):
        before = text[: match.start()].rstrip(" \t\r\n")
        if before[-1:] in ("[", "{", ","):
            return True
    return False


# A block scalar header: with an indentation indicator ('|2', '>-1') and a blank first line (blank-only
# content: the two read its white space differently), or at the end of a text that does not
# end with a line break (libyaml and rapidyaml give such block scalars different white space).
_INDENTED_BLOCK = re.compile(r"[|>](?<=[\s:-][|>])(?:[1-9][+-]?|[+-][1-9])[ \t]*(?:#[^\n]*)?\r?\n[ \t]*(?:\r?\n|$)")
# A '|' or '>' starting a value but not followed by a well-formed header ('a: |2x'): rapidyaml reads on.
_HEADER_START = re.compile(r"[|>](?![1-9+-]{0,2}[ \t]*(?:#[^\n]*)?(?:\n|$))")
_HEADER_DIGIT = re.compile(r"[ \t]*[1-9+-]")


def _bad_header(nl: str) -> bool:
    """A '|' or '>' after ':', '?' or '-' and white space, or at a line start before an indicator digit or
    chomping sign, that does not start a well-formed header (``nl``: the text after a line break)."""
    for match in _HEADER_START.finditer(nl):
        at = match.start()
        before = nl[:at]
        stripped = before.rstrip(" \t")
        if stripped[-1:] in (":", "?", "-") and len(stripped) < len(before):
            return True
        if stripped[-1:] == "\n" and _HEADER_DIGIT.match(nl, at + 1) is not None:
            return True
    return False


# A '\' ending a double-quoted line, then a blank line: libyaml keeps a line break, rapidyaml a space.
_ESCAPED_BREAK_BLANK = re.compile(r"\\\r?\n[ \t]*\r?\n|\n[ \t]*\\[ \t]\r?\n")
# After a one-line quoted sequence entry, ' -' ('- "" - x': rapidyaml reads two entries). And the escapes
# \L and \P (rapidyaml was seen to misread a '\\' before them).
_AFTER_QUOTE = re.compile(r"\n[ \t]*(?:-[ \t]+)+(?:\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\n]|'')*')[ \t]+-")
_QUOTED_KEY_HINT = re.compile(r"[\"'][ \t]*:(?:[ \t\r\n]|$)")  # a reason to look for quoted keys in the tree
_EXPLICIT_KEY = re.compile(r"\n[ \t]*(?:-[ \t]+)*\?(?:[ \t\r\n]|$)")  # '? a\n:1': the two differ
_LINE_ESCAPE = re.compile(r"\\[LP]")
_HEADER_COMMENT = re.compile(r"[|>](?<=[\s:-][|>])[1-9+-]{0,2}[ \t]+#")  # rapidyaml reads '+' in '> #+'
_BLOCK_HEADER = re.compile(r"[|>](?<=[\s:-][|>])[1-9+-]{0,2}[ \t]*(?:#[^\n]*)?$", re.M)
# Tabs where the two parsers were seen to differ: after ':', '?' or '-' ('a:\tx'), in a line's leading white space
# (block scalar indentation), after a line's '- ' or '? ', before a line break, ',', ']', '}' or a ': '.
_TAB_RISK = re.compile(r"[:?-]\t|\n[ ]*(?:[-?][ ]+)*[-?]?[ ]*\t|\t[ \t]*(?:[,\]}\r\n]|:(?:[ \t\r\n]|$))")
# Strings in the emitted JSON that may stand for a plain scalar rapidyaml reads differently: a null
# spelling, a float spelling the emitter rewrote, a string starting with '@', '`', ',', ']', '}' or '%'
# (libyaml refuses a plain scalar starting with one of these; rapidyaml reads text) or a space (no plain
# scalar does: rapidyaml was seen to make one of an over-indented key).
# The emitter starts a string after ': ', '[', '{', ',' (compact flow) or indentation.
_SUSPECT_JSON = re.compile(
    r'"(?:~|Null|NULL|[-+]?\.(?:nan|inf))"|"(?:(?<=: ")|(?<=\[")|(?<=\{")|(?<=,")|(?<=  "))[@`,\]}% ]'
)
_SUSPECT_PLAIN = re.compile(rb"(?:~|Null|NULL|[-+]?\.?(?i:nan|inf)|[@`,\]}% ].*)", re.S)
_NULL_KEYS = frozenset(("", "null"))
_REWRITTEN_FLOAT = re.compile(r"[-+]?0\.|.*\.0(?:[eE]|$)")


class _Unsure(Exception):
    """The decoded result has something this path does not vouch for."""


def _float(text: str) -> str:
    if _REWRITTEN_FLOAT.match(text):  # maybe '.5' or '12.' rewritten by the emitter
        raise _Unsure("a float the JSON emitter may have rewritten")
    return text


_TEXT = {True: "true", False: "false"}


def _restore(value: Any) -> Any:
    """JSON true/false come only from plain ``true``/``false``: give back the text as written."""
    if value is True or value is False:
        return _TEXT[value]
    # Values are str, None, dict or list, so 'in' (==) finds only booleans; dicts were restored
    # by their own _pairs call. The containment tests run in C: most lists need no Python loop.
    if type(value) is list and (True in value or False in value or list in map(type, value)):
        return [_restore(v) for v in value]
    return value


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Each decoded mapping: refuse duplicate and null-like keys, restore booleans."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Unsure("a duplicate key")
    if not _NULL_KEYS.isdisjoint(out):
        raise _Unsure("an empty or null key")
    values = out.values()
    if True in values or False in values or list in map(type, values):
        for key, value in pairs:
            out[key] = _restore(value)
    return out


# strict=False: the emitter escapes '"', '\\' and the common controls but writes others (from escapes
# such as "\0" or "\x85") as they are.
_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_float=_float, parse_int=str, strict=False)


class _Silenced:
    """Point fd 2 at /dev/null for the duration: rapidyaml prints every parse error there."""

    def __init__(self) -> None:
        self._null = os.open(os.devnull, os.O_WRONLY)

    def __enter__(self) -> None:
        self._saved = os.dup(2)
        os.dup2(self._null, 2)

    def __exit__(self, *exc: object) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)


_silenced: _Silenced | None = None


_buffer = bytearray(64 * 1024)


def _emit_json(tree: Any) -> str:
    """The tree as JSON text, emitted into a reused buffer.

    ``ryml.emit_json`` leaks its malloc'd output (~4 KB a document, 1.6 GB per worker at 1M
    documents), so the JSON is written into our own buffer, grown when a document needs more.
    """
    global _buffer
    failed, size = ryml.emit_json_to_substr(tree, tree.root_id(), _buffer)
    if failed:
        _buffer = bytearray(max(size, 2 * len(_buffer)))
        failed, size = ryml.emit_json_to_substr(tree, tree.root_id(), _buffer)
    return str(memoryview(_buffer)[:size], "utf-8")


if ryml is not None:
    _PROPERTY_BITS = ryml.KEYANCH | ryml.VALANCH | ryml.KEYREF | ryml.VALREF | ryml.KEYTAG | ryml.VALTAG
    _KEY_NOT_PLAIN = ryml.KEY_SQUO | ryml.KEY_DQUO | ryml.KEY_LITERAL | ryml.KEY_FOLDED
    _VAL_NOT_PLAIN = ryml.VAL_SQUO | ryml.VAL_DQUO | ryml.VAL_LITERAL | ryml.VAL_FOLDED
    _KEY, _VAL = ryml.KEY, ryml.VAL
    _FLOW = ryml.CONTAINER_STYLE_FLOW
    _KEY_QUOTED = ryml.KEY_SQUO | ryml.KEY_DQUO
    _BLOCK_STYLE = ryml.VAL_LITERAL | ryml.VAL_FOLDED | ryml.KEY_LITERAL | ryml.KEY_FOLDED
    _SCALARS = (
        (ryml.KEY, _KEY_NOT_PLAIN, ryml.Tree.key, True),
        (ryml.VAL, _VAL_NOT_PLAIN, ryml.Tree.val, False),
    )
_FLOW_START = (b"?", b":")  # libyaml refuses or re-reads a plain scalar starting with these in a flow collection
# What libyaml reads differently in a flow collection's plain keys (a key over two lines, ' #' a comment,
# a ':' inside) and values (' #', a blank line inside, '?' or ':' first, ':' before '?' or a flow indicator).
_FLOW_KEY = re.compile(rb"[ \t#:\n]")
_FLOW_VAL = re.compile(rb"[ \t]#|\n|^[?:]|:[?,\[\]{}]")


_ANY_BLOCK = 1  # the text has a '|' or '>' that may be a malformed or commented block scalar header
_BLANK_BLOCK = 2  # the text has an indentation indicator on a header followed by a blank line


def _tree_reason(tree: Any, plain: bool, flow: bool, flow_text: str | None, blocks: int = 0) -> str | None:
    """Why the tree is not to be trusted: node properties, a quoted key, (``plain``) a plain scalar
    rapidyaml reads differently, (``flow``: the text may have one) in a non-empty flow collection, a
    plain scalar that libyaml reads differently there, or a ``_flow_text`` construct in ``flow_text``; with
    ``blocks``, any block scalar (``_ANY_BLOCK``: it may come from the suspect header) or a block scalar of
    white space only (``_BLANK_BLOCK``: libyaml and rapidyaml indent blank-only content differently)."""
    kind = tree.type
    seen: list[int] = []
    flow_open = False  # a non-empty flow collection so far (the parser numbers parents before children)
    for node in range(tree.size()):
        bits = kind(node)
        seen.append(bits)
        if bits & _PROPERTY_BITS:
            return "an anchor, alias or tag"
        if bits & _KEY_QUOTED:
            return "a quoted key"
        if blocks and bits & _BLOCK_STYLE:
            if blocks == _ANY_BLOCK:
                return "a block scalar, and a '|' or '>' that may start a malformed or commented header"
            value = tree.val(node)
            if value is None or not bytes(value).strip():
                return "a block scalar with an indentation indicator and white space only"
        in_flow = False
        if flow:
            if not flow_open and bits & _FLOW and tree.has_children(node):
                if flow_text is not None and _flow_text(flow_text):
                    return "a flow construct libyaml reads differently (':]', a line starting with ':', ']#')"
                flow_open = True
            if flow_open:
                parent = tree.parent(node)
                in_flow = bool((seen[parent] if parent < node else kind(parent)) & _FLOW)
        if not (plain or in_flow):
            continue
        for has, not_plain, get, is_key in _SCALARS:
            if not bits & has or bits & not_plain:
                continue
            scalar = get(tree, node)
            if scalar is None:
                continue
            scalar = bytes(scalar)
            if plain and _SUSPECT_PLAIN.fullmatch(scalar) is not None:
                return "a plain scalar rapidyaml reads differently (~, Null, NULL, nan/inf; @, `, ',', ']', '}', % or a space first)"
            if in_flow and (
                scalar[:1] in _FLOW_START or _FLOW_KEY.search(scalar) if is_key else _FLOW_VAL.search(scalar)
            ):
                return "a plain scalar in a flow collection that libyaml reads differently ('?' or ':' first, ' #', a line break, a key with a space or ':')"
    return None


def available() -> bool:
    return ryml is not None


def _text_reason(text: str) -> str | None:
    """Why the text alone sends the document to the strict loader (None: go on)."""
    nl = "\n" + text  # the line screens look for '\n': the first line has one too
    for marker, reason in _ALWAYS:
        if marker in text:
            return reason
    if text[:1] in _INDICATORS:
        return "the document starts with an indicator"
    if "\r" in text and _LONE_CR.search(text) is not None:
        return "a lone carriage return"
    if _looks_deep(text):
        return "deep nesting (the strict loader's depth screen)"
    if "\t" in text and _TAB_RISK.search(nl) is not None:
        return "a tab next to structure"
    if ("|" in text or ">" in text) and not text.endswith("\n") and _BLOCK_HEADER.search(nl) is not None:
        return "a block scalar in a text without a final line break"
    if "\\\n" in text or "\\\r" in text or "\\ " in text or "\\\t" in text:
        if _ESCAPED_BREAK_BLANK.search(nl) is not None:
            return "an escaped line break followed by a blank line, or a line of only an escaped space"
    if ('- "' in text or "- '" in text or "-  " in text or "-\t" in text) and _AFTER_QUOTE.search(nl) is not None:
        return "'-' after a quoted sequence entry"
    if ("? " in text or "?\t" in text or "?\n" in text or "?\r" in text or text.endswith("?")) and _EXPLICIT_KEY.search(
        nl
    ) is not None:
        return "an explicit key ('? ') in a block collection"
    if "\\" in text and _LINE_ESCAPE.search(text) is not None:
        return "a \\L or \\P escape"
    if not text.endswith("\n") and text.rstrip(" \t")[-1:] in ("-", "?", ":"):
        return "an indicator at the end of a text without a final line break"
    if ("[" in text or "{" in text) and text[:1] != "{":
        if _flow_then(nl):
            return "a flow collection with more on its line"
    return None


def _answer(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The answer and None, or None and the reason the document is declined."""
    global _silenced
    if ryml is None:
        return None, "rapidyaml is not installed"
    reason = _text_reason(text)
    if reason is not None:
        return None, reason
    if _silenced is None:
        _silenced = _Silenced()
    try:
        with _silenced:
            tree = ryml.parse_in_arena(text.encode())
            emitted = _emit_json(tree)
    except Exception:  # rapidyaml's parse errors: the strict loader writes the message
        return None, "rapidyaml refuses it"
    if not emitted:
        return None, "empty"
    plain = _SUSPECT_JSON.search(emitted) is not None
    # A non-empty flow collection needs a '[' or '{' not followed by its closing bracket.
    flow = (text.count("[") != text.count("[]") or text.count("{") != text.count("{}")) and _OPENS_FLOW.search(
        text
    ) is not None
    blocks = 0
    if "|" in text or ">" in text:
        nl = "\n" + text
        if _bad_header(nl) or ("#" in text and _HEADER_COMMENT.search(nl) is not None):
            blocks = _ANY_BLOCK
        elif _INDENTED_BLOCK.search(nl) is not None:
            blocks = _BLANK_BLOCK
    if (
        plain
        or flow
        or blocks
        or _PROPERTY.search(text) is not None
        or (("'" in text or '"' in text) and _QUOTED_KEY_HINT.search(text) is not None)
    ):
        reason = _tree_reason(tree, plain, flow, text if flow else None, blocks)
        if reason is not None:
            return None, reason
    try:
        value = _DECODER.decode(emitted)
    except _Unsure as exc:
        return None, str(exc)
    except (ValueError, RecursionError):
        return None, "the emitted JSON is not plain JSON (a number JSON does not take)"
    if not isinstance(value, dict):
        return None, "the top level is not a mapping"
    return value, None


def load_fast(text: str) -> dict[str, Any] | None:
    """The document as the strict loader would return it, or None when not sure (or invalid).

    ``text`` has passed ``extract``'s character checks (no control characters, no U+2028/U+2029).
    """
    return _answer(text)[0]


def decline_reason(text: str) -> str | None:
    """Why ``load_fast`` leaves ``text`` to the strict loader, or None when it answers."""
    return _answer(text)[1]


def screened_out(text: str) -> bool:
    """True when the text alone sends the document to the strict loader."""
    return _text_reason(text) is not None
