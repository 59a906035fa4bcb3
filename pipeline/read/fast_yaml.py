"""Fast paths for frontmatter YAML, each answering only what the strict loader would answer.

The strict loader (``strict_yaml.load_strict``) stays the authority: a fast path returns the document
exactly as the strict loader would, or ``None`` for everything it is not sure about, so that every
refusal, message and position comes from the strict loader. Two engines, the first one available:

**libyaml events** (``_frontmatter_yaml.c``, built by setup.py): the strict loader parses with
libyaml (PyYAML's CSafeLoader) and spends most of its time on what PyYAML builds around libyaml's
events (Node and Mark objects, a Python resolve() call per scalar, our builder's walk). The C module
reads the same events from the same code (the libyaml inside PyYAML's own extension, bound at import)
and builds dicts, lists, str and None directly; it declines parse errors, anchors, aliases, tags,
directives, keys that are not text, duplicate keys, more than one document, a top level that is not a
mapping and nesting past ``MAX_DEPTH``. Because scanning, escapes, folding and block scalars are
libyaml's own, every writer's style takes this path (PyYAML, ruamel.yaml, js-yaml, npm ``yaml``: block
and flow). One check is the strict loader's own, run first as it is there: a ``?`` starting an entry
in a flow collection (``flow_question_at``), which libyaml reads as a key and the strict loader refuses.

**rapidyaml** (when the C module is not built: no libyaml header at install time): rapidyaml parses,
its JSON emitter hands the tree to Python's C ``json`` decoder, about 3.5× faster than the strict loader
on plain documents. A screen of the text plus checks on the decoded result close every place where
rapidyaml and libyaml were seen (or could plausibly) differ:

- flow collections (``[``, ``{``): libyaml's ``?x`` reading and many flow edge cases;
- block scalars (``|``, ``>`` as a value), explicit keys (``? ``), node properties and
  reserved indicators (``&``, ``*``, ``!``, ``@``, a backquote, ``%`` starting a token):
  anchors, aliases and tags vanish in rapidyaml's JSON, and libyaml refuses the reserved ones;
- ``~``, ``Null`` and ``NULL`` (null to libyaml, text to rapidyaml), tabs, backslash escapes,
  a lone carriage return, and input deep enough to need the strict loader's depth screen;
- in the decoded result: a float (the JSON emitter rewrites ``12.`` as ``12.0``), a duplicate
  key, an empty or null-spelled key (the strict loader refuses null keys), a top level that is
  not a mapping.

That screen declines nearly every real writer's document (escapes, brackets, ``~``, indicators in text).

Equivalence on everything either path answers is a differential test run in CI
(``tests/test_fast_yaml.py``: hostile corpus, seeds, generated and mutated documents, five real writers
in block and flow style). Both engines are native code: the caller enables fast paths only in
crash-isolated parser processes (``engine.parse``); rapidyaml also prints its parse errors to stderr,
which is silenced around the call.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import yaml

from pipeline.read.strict_yaml import _looks_deep, flow_question_at

try:  # an optional accelerator: without it every document takes the strict path
    import ryml
except ImportError:  # pragma: no cover - rapidyaml is a declared dependency
    ryml = None


def _bind_libyaml() -> Any:
    """The C events module bound to PyYAML's libyaml, or None (not built, or PyYAML without libyaml)."""
    try:
        import yaml._yaml as pyyaml_c

        from pipeline.read import _frontmatter_yaml

        _frontmatter_yaml.bind(pyyaml_c.__file__)
    except (ImportError, OSError):
        return None
    return _frontmatter_yaml


_events = _bind_libyaml()

# Anything that sends a document to the strict loader (see the module docstring).
_ALWAYS = (
    "[",
    "]",
    "{",
    "}",
    "\t",
    "\\",
    "~",
    "Null",
    "NULL",
    "\n---",
    "\n...",  # document markers
    "\ufeff",
    "\ufffe",
    "\uffff",  # a BOM inside a document, non-characters: libyaml refuses them
)  # sent to the strict loader wherever they are
# An indicator that starts a token (after a space, a line break, ',', ':', '?' or '-'). Searching for
# the indicator first and then looking behind is several times faster than the other way round.
_TOKEN_START = re.compile(r"[&*!@`%?|>](?<=[\s,:?-].)")
_INDICATORS = frozenset("&*!@`%?|>-:#'\".")  # a document may not start with one of these here
_LONE_CR = re.compile(r"\r(?!\n)")
_NULL_KEYS = frozenset(("", "null"))


class _Unsure(Exception):
    """The decoded result has something this path does not vouch for."""


def _float(text: str) -> Any:
    raise _Unsure


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
    if len(out) != len(pairs) or not _NULL_KEYS.isdisjoint(out):
        raise _Unsure
    values = out.values()
    if True in values or False in values or list in map(type, values):
        for key, value in pairs:
            out[key] = _restore(value)
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_float=_float, parse_int=str)


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


def available() -> bool:
    return engine() is not None


def engine() -> str | None:
    """The fast path this process uses: "libyaml" (events, in C), "rapidyaml", or None."""
    if _events is not None:
        return "libyaml"
    return "rapidyaml" if ryml is not None else None


def load_fast(text: str) -> dict[str, Any] | None:
    """The document as the strict loader would return it, or None when not sure (or invalid).

    ``text`` has passed ``extract``'s character checks (no control characters, no U+2028/U+2029).
    """
    if _events is not None:
        return load_events(text)
    return load_rapidyaml(text)


def decline_reason(text: str) -> str | None:
    """Why the fast path leaves ``text`` to the strict loader (None when it answers): for tests and benchmarks."""
    if _events is not None:
        return events_decline_reason(text)
    return rapidyaml_decline_reason(text)


def _flow_question(text: str) -> bool:
    """Whether the strict loader refuses a ``[?x]`` here: its own check, which is a text screen first
    (most documents end there) and a token scan only where the screen matches (~0.3% of writers'
    documents, mostly a ', ?' inside quoted text). A scan error declines too: the strict loader words it."""
    try:
        return flow_question_at(text) is not None
    except yaml.YAMLError:
        return True


def _events_answer(text: str) -> dict[str, Any] | str:
    """The libyaml-events engine's dict, or why it declines (one path for the load and its reason)."""
    if _events is None:
        return "the C module is not built"
    if _flow_question(text):
        return "'?' starting an entry in a flow collection, or a YAML error before it (the strict loader refuses both)"
    return _events.load(text.encode())


def load_events(text: str) -> dict[str, Any] | None:
    """The libyaml-events engine (see the module docstring); None when it declines or is not built."""
    value = _events_answer(text)
    return value if type(value) is dict else None


def events_decline_reason(text: str) -> str | None:
    value = _events_answer(text)
    return value if isinstance(value, str) else None


def screened_out(text: str) -> bool:
    """True when the text has a construct this path leaves to the strict loader."""
    return (
        any(marker in text for marker in _ALWAYS)
        or _TOKEN_START.search(text) is not None
        or (text[:1] in _INDICATORS)
        or ("\r" in text and _LONE_CR.search(text) is not None)
        or _looks_deep(text)
    )


def rapidyaml_decline_reason(text: str) -> str | None:
    """Why the rapidyaml engine leaves ``text`` to the strict loader (None when it answers)."""
    marker = next((m for m in _ALWAYS if m in text), None)
    if marker is not None:
        return f"screen: {marker!r} anywhere"
    token = _TOKEN_START.search(text)
    if token is not None:
        return f"screen: {token.group()!r} starting a token"
    if text[:1] in _INDICATORS:
        return f"screen: the document starts with {text[:1]!r}"
    if "\r" in text and _LONE_CR.search(text) is not None:
        return "screen: a lone carriage return"
    if _looks_deep(text):
        return "screen: deep nesting"
    if ryml is None:
        return "rapidyaml is not installed"
    return (
        None
        if load_rapidyaml(text) is not None
        else "the decoded result (a float, a duplicate or null key, not a mapping)"
    )


def load_rapidyaml(text: str) -> dict[str, Any] | None:
    """The rapidyaml engine (see the module docstring); None when it declines or is not installed."""
    global _silenced
    if ryml is None or screened_out(text):
        return None
    if _silenced is None:
        _silenced = _Silenced()
    try:
        with _silenced:
            tree = ryml.parse_in_arena(text.encode())
            emitted = _emit_json(tree)
    except Exception:  # rapidyaml's parse errors: the strict loader writes the message
        return None
    if not emitted:
        return None
    try:
        value = _DECODER.decode(emitted)
    except (_Unsure, ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    return value
