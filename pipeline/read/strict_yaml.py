"""A strict, safe YAML loader for frontmatter, plugged into python-frontmatter.

Why not ``yaml.safe_load``: YAML 1.1 silently turns ``no`` into ``False`` and
``0777`` into 511, keeps the last of duplicate keys, expands alias bombs and can
crash libyaml on deep nesting. Here libyaml's C parser builds the node tree, but
every plain scalar stays the exact text written (only ``null``/``~``/empty mean
null); the document contract decides what is a number, a flag or a timestamp.
Aliases, explicit tags, duplicate keys, non-string keys and nesting deeper than
``MAX_DEPTH`` are refused with the line and column.
"""

from __future__ import annotations

import re
from typing import Any

import frontmatter
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.read.problems import Problem, ProblemError

MAX_DEPTH = 64  # real seeds nest 4 levels (related[].images[].url)

STR_TAG = "tag:yaml.org,2002:str"
NULL_TAG = "tag:yaml.org,2002:null"
SEQ_TAG = "tag:yaml.org,2002:seq"
MAP_TAG = "tag:yaml.org,2002:map"
_NULLS = frozenset(("", "~", "null", "Null", "NULL"))

# Cheap screens for inputs deep enough to threaten libyaml's recursive composer.
# Only files that trip one are measured exactly (by parse events, which do not recurse).
_DEEP_INDENT = " " * 128
_DEEP_DASHES = re.compile(r"(?:-[ \t]+){32}")


class _Loader(yaml.CSafeLoader):  # type: ignore[misc, name-defined]
    """libyaml parser and composer; our resolver; construction is ours too."""

    def resolve(self, kind: type, value: str | None, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            if implicit[0] and value in _NULLS:
                return NULL_TAG
            return STR_TAG
        return SEQ_TAG if kind is SequenceNode else MAP_TAG


def _problem(reason: str, message: str, node_or_mark: Any, line_offset: int) -> ProblemError:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    line = col = None
    if mark is not None:
        line = mark.line + 1 + line_offset
        col = mark.column + 1
    where = f" (line {line}, column {col})" if line is not None else ""
    return ProblemError(Problem(reason, message + where, line, col))


def too_deep_at(text: str) -> Any:
    """Mark of the first collection nested deeper than MAX_DEPTH (None if none), from parse
    events: iterative, so safe on any depth."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.CSafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                return event.start_mark
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return None


def _looks_deep(text: str) -> bool:
    return (
        text.count("[") + text.count("{") > 2 * MAX_DEPTH
        or _DEEP_INDENT in text
        or ("- - - -" in text and _DEEP_DASHES.search(text) is not None)
    )


class _Builder:
    """Turns a composed node tree into dicts, lists, str and None, refusing what is unsafe."""

    def __init__(self, line_offset: int) -> None:
        self.line_offset = line_offset
        self.seen: set[int] = set()

    def visit(self, node: Node) -> None:
        """Every node is visited once; a second visit means an alias reused an anchored node."""
        if id(node) in self.seen:
            raise _problem("yaml_alias", "YAML aliases are not allowed", node, self.line_offset)
        self.seen.add(id(node))

    def build(self, node: Node, depth: int) -> Any:
        self.visit(node)
        tag = node.tag
        if isinstance(node, ScalarNode):
            if tag == STR_TAG:
                return node.value
            if tag == NULL_TAG and not node.style and node.value in _NULLS:
                return None  # a plain null (an explicit ``!!null`` on a plain null changes nothing)
            # Anything else tagged null was given a tag explicitly: ``!!null "text"`` would drop the
            # text, so it is refused like every other explicit tag.
        elif depth >= MAX_DEPTH:
            raise _problem(
                "nesting_too_deep",
                f"frontmatter nests deeper than {MAX_DEPTH} levels",
                node,
                self.line_offset,
            )
        elif isinstance(node, SequenceNode) and tag == SEQ_TAG:
            return [self.build(child, depth + 1) for child in node.value]
        elif isinstance(node, MappingNode) and tag == MAP_TAG:
            return self._mapping(node, depth)
        raise _problem(
            "yaml_tag",
            f"explicit YAML tag {tag!r} is not allowed; remove the tag (quote the value if it is text)",
            node,
            self.line_offset,
        )

    def _mapping(self, node: MappingNode, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            self.visit(key_node)
            if not (isinstance(key_node, ScalarNode) and key_node.tag == STR_TAG):
                raise _problem(
                    "yaml_key",
                    "mapping keys must be plain text (found a null, list, mapping or tagged key)",
                    key_node,
                    self.line_offset,
                )
            key = key_node.value
            if key in out:
                first = lines[key] + 1 + self.line_offset
                raise _problem(
                    "duplicate_key",
                    f"key {key!r} appears twice (first on line {first}); keep one",
                    key_node,
                    self.line_offset,
                )
            lines[key] = key_node.start_mark.line
            out[key] = self.build(value_node, depth + 1)
        return out


# A '?' right after '[', '{' or ',' (spaces allowed) and before a character a plain scalar may start with.
_FLOW_QUESTION = re.compile(r"[\[{,]\s*\?[^\s,\[\]{}]")
_NOT_PLAIN_START = " \t\r\n,[]{}"


def flow_question_at(text: str) -> Any:
    """Mark of a '?x' in a flow collection, or None.

    YAML reads ``[?x]`` as the text '?x' (a plain scalar may start with '?' followed by a safe
    character); libyaml reads it as an explicit key, ``[{x: null}]``, and ``{ ?foo: bar }`` as
    ``{foo: bar}``: a silent change, so such a document is refused. ``[? x]`` (with a space) is an
    explicit key to both, and a quoted '?x' is text to both.
    """
    if ("[" not in text and "{" not in text) or not _FLOW_QUESTION.search(text):
        return None  # no flow collection (most seeds), or no '?' that starts an entry in one
    depth = 0
    for token in yaml.scan(text, Loader=yaml.CSafeLoader):
        if isinstance(token, (yaml.FlowSequenceStartToken, yaml.FlowMappingStartToken)):
            depth += 1
        elif isinstance(token, (yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken)):
            depth -= 1
        elif isinstance(token, yaml.KeyToken) and depth > 0:
            i = token.start_mark.index
            if text[i] == "?" and i + 1 < len(text) and text[i + 1] not in _NOT_PLAIN_START:
                return token.start_mark
    return None


def load_strict(text: str, line_offset: int = 0) -> Any:
    """Load one YAML document strictly; raise ProblemError with a file position on refusal.

    ``line_offset`` is the number of file lines before ``text`` starts, so that
    positions name lines of the file, not of the frontmatter block.
    """
    try:
        deep = too_deep_at(text) if _looks_deep(text) else None
        if deep is not None:
            raise _problem("nesting_too_deep", f"frontmatter nests deeper than {MAX_DEPTH} levels", deep, line_offset)
        question = flow_question_at(text)
        if question is not None:
            raise _problem(
                "flow_question_mark",
                "'?' starts a value in a [...] or {...} collection: YAML reads it as text, libyaml as a key "
                "(so '[?x]' would load as '[{x: null}]'); quote the value",
                question,
                line_offset,
            )
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            what = f"{exc.problem} {exc.context}"
        if "maximum nesting depth" in what:  # libyaml's own limit (1000 levels)
            raise _problem(
                "nesting_too_deep", f"frontmatter nests deeper than {MAX_DEPTH} levels", mark, line_offset
            ) from None
        raise _problem("yaml_syntax", f"YAML syntax error: {what}", mark, line_offset) from None
    except yaml.YAMLError as exc:
        raise ProblemError(Problem("yaml_syntax", f"YAML error: {exc}")) from None
    if node is None:
        return None
    try:
        return _Builder(line_offset).build(node, 0)
    except ProblemError as exc:
        if exc.problem.reason != "yaml_alias":
            raise
        # The composed tree only knows the anchor; parse events know where the alias is.
        alias = next(e for e in yaml.parse(text, Loader=yaml.CSafeLoader) if isinstance(e, yaml.AliasEvent))
        raise _problem(
            "yaml_alias",
            f"YAML anchors and aliases are not allowed (found *{alias.anchor}); write the value out in full",
            alias.start_mark,
            line_offset,
        ) from None


class StrictYAMLHandler(frontmatter.YAMLHandler):
    """python-frontmatter handler that loads with ``load_strict``."""

    def __init__(self, line_offset: int = 0) -> None:
        super().__init__()
        self.line_offset = line_offset

    def load(self, fm: str, **kwargs: object) -> Any:
        return load_strict(fm, self.line_offset)
