"""The fast YAML paths answer only what the strict libyaml loader answers the same way.

A differential test, run on both engines (libyaml events in C, and rapidyaml, the fallback when the C
module is not built): for every document, each either declines (None: the strict loader decides) or
returns exactly what ``load_strict`` returns, and the strict loader accepted it. The
documents are the shipped seeds, the hostile corpus, the benchmark generator's documents, hand-written
edge cases from each YAML mutation class, and hypothesis-mutated variants of all of them (byte-level
insertions, deletions and replacements drawn from the characters and tokens that change YAML's reading:
indentation, quoting, flow style, comments, tabs, line breaks, Unicode, numbers, anchors, tags, nesting).
A second set of checks keeps the test honest: the fast path must actually answer the ordinary documents,
or it would pass by declining everything.
"""

from __future__ import annotations

import collections
import functools
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import generate
from pipeline.read import fast_yaml
from pipeline.read.extract import _CONTROL, _YAML_BREAKS
from pipeline.read.problems import ProblemError
from pipeline.read.strict_yaml import load_strict

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = ROOT / "tests" / "data" / "hostile"


def _frontmatter(text: str) -> str | None:
    text = text.lstrip("\ufeff")
    if not text.startswith("---\n") or "\n---" not in text[3:]:
        return None
    return text[4:].split("\n---", 1)[0] + "\n"


def _corpus() -> list[str]:
    files = sorted(p for p in (ROOT / "seeds").rglob("*") if p.is_file())
    files += sorted(p for p in HOSTILE.iterdir() if p.suffix == ".md")
    texts = [p.read_bytes().decode("utf-8", errors="replace") for p in files]
    texts += [generate.document(i, 400, 11) for i in range(400)]
    return [fm for fm in map(_frontmatter, texts) if fm]


CORPUS = _corpus()

# Hand-written cases, one or more per mutation class; most must be declined, all must agree.
EDGE_CASES = [
    "a: 0755\nb: 0x1F\nc: 1_000\nd: +12\ne: -0\nf: 00\n",
    "a: 12.\nb: .5\nc: 1e5\nd: 1.0e+5\ne: .inf\nf: .nan\n",
    "a: true\nb: True\nc: TRUE\nd: false\ne: yes\nf: on\ng: 'true'\n",
    "a: null\nb: Null\nc: NULL\nd: ~\ne:\nf: 'null'\ng: \"~\"\n",
    "a: &x 1\nb: *x\n",
    "a: !!str 1\nb: !x y\n",
    "a: 1\na: 2\n",
    "? a\n: 1\n",
    "null: x\n",
    ": x\n",
    "~: x\n",
    "'': x\n",
    'a: "\\u00e9\\x41\\N\\_\\L\\P\\t\\/\\0"\n',
    "a: multi\n  line\n   plain\n",
    "a: 'x\n\n  y'\n",
    'a: "x\n  y"\n',
    "a: |\n  x\n  y\n",
    "a: |-\n  x\n\n",
    "a: >+\n  x\n\n\n",
    "a: |2\n   x\n",
    "a: [?x]\n",
    "a: {?x: y}\n",
    "a: [a, b]\n",
    "a: x\r\nb: y\r\n",
    "a: x\rb: y\r",
    "a:\t1\n",
    "a: x # c\n# full\nb: 'y' #c\n",
    "a: x#y\n",
    "a: @x\n",
    "a: `x\n",
    "a: %x\n",
    "%YAML 1.1\n---\na: 1\n",
    "a: x\n---\nb: y\n",
    "a: x\n...\n",
    "a: 1\n b: 2\n",
    "a:\n  b: 1\n c: 2\n",
    "a:\n- 1\n- 2\n",
    "a:\n  - b: true\n    c: [true, false]\n",
    "a:\n  - - true\n    - x\n",
    "a: \ufeffx\n",
    "\ufeffa: x\n",
    "a: x\ufffe\n",
    "a: 😀 é 中文\n",
    "<<: x\na: <<\n",
    "a: x: y\n",
    "a: b: c\n",
    "- a\n- b\n",
    "just text\n",
    "",
    "a: 'it''s'\n",
    "a: -\n",
    "a: - x\n",
    "a: ? x\n",
    "a: | x\n",
    "a: x | y > z & w * v ! u\n",
    "- - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - x\n",
    "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 80)) + "  " * 80 + "v\n",
]

# Tokens and characters that change how YAML reads a document (see the module docstring).
VOCABULARY = [
    ":",
    ": ",
    "- ",
    "-",
    "#",
    " #",
    "'",
    '"',
    "\n",
    "  ",
    " ",
    "    ",
    "\t",
    "&a ",
    "*a",
    "!!str ",
    "!x ",
    "? ",
    "?",
    "?x",
    "|",
    "|-\n  ",
    ">\n  ",
    "[",
    "]",
    "{",
    "}",
    ",",
    ", ",
    "~",
    "null",
    "Null",
    "NULL",
    "true",
    "True",
    "false",
    "yes",
    "no",
    "on",
    "0755",
    "0x1F",
    "1e3",
    "12.",
    ".5",
    "+1",
    "-0",
    "1_0",
    ".inf",
    "é",
    "😀",
    "中",
    "\u00a0",
    "\u200b",
    "\ufeff",
    "\\",
    "\\n",
    '\\"',
    "\\x41",
    "%",
    "@",
    "`",
    "...",
    "---",
    "\r\n",
    "\r",
    "x: y\n",
    "\n  - ",
    "\n- ",
    "\n  k: v",
    "'it''s'",
    "a: b: c",
    "<<: ",
    "=",
    "\n\n",
    "- - x",
]


def _strict(text: str) -> Any:
    try:
        return load_strict(text)
    except ProblemError as exc:
        return exc


def assert_agrees(text: str) -> bool:
    """The differential property; returns whether the fast path answered.

    Text with control characters or U+2028/U+2029 never reaches a YAML loader (``extract`` refuses
    it first), so the fast path does not screen for them and such text is skipped here.
    """
    if _CONTROL.search(text) or _YAML_BREAKS.search(text):
        return False
    answers = {name: load(text) for name, load in ENGINES.items()}
    if all(answer is None for answer in answers.values()):
        return False
    strict = _strict(text)
    for name, answer in answers.items():
        if answer is not None:
            assert not isinstance(strict, ProblemError), f"{name} accepted what the strict loader refuses: {text!r}"
            assert answer == strict, f"{name} read {text!r} differently"
            assert _types(answer) == _types(strict), f"{name} gave other types for {text!r}"
    return answers[fast_yaml.engine() or "libyaml"] is not None


def _types(value: Any) -> Any:
    """The value's shape with every leaf replaced by its type (== alone would not tell 1 from '1')."""
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value)


ENGINES = {"libyaml": fast_yaml.load_events, "rapidyaml": fast_yaml.load_rapidyaml}


_NOT_BUILT = "the C YAML module is not built (setup.py needs libyaml's header: apt-get install libyaml-dev)"
# Where the C module could not be built, the tests of the events engine skip (rapidyaml's still run);
# in CI it must be built.
needs_events = pytest.mark.skipif(fast_yaml.engine() != "libyaml", reason=_NOT_BUILT)


@pytest.fixture(autouse=True, scope="module")
def _engines() -> None:
    assert fast_yaml.load_rapidyaml("a: b\n") is not None, "rapidyaml is a declared dependency"
    if fast_yaml.engine() != "libyaml" and os.environ.get("CI") == "true":
        pytest.fail(_NOT_BUILT)


@needs_events
def test_the_c_module_runs_pyyamls_own_libyaml() -> None:
    """The events engine calls the libyaml inside PyYAML's extension, not another copy on the system."""
    import yaml._yaml as pyyaml_c

    from pipeline.read import _frontmatter_yaml

    assert _frontmatter_yaml.bind(pyyaml_c.__file__) == pyyaml_c.get_version_string()


@pytest.mark.parametrize("text", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_edge_cases_agree(text: str) -> None:
    assert_agrees(text)


def test_corpus_agrees_and_is_answered_by_the_fast_path() -> None:
    answered = [assert_agrees(text) for text in CORPUS]
    generated = answered[-400:]
    assert all(generated), "the fast path declined an ordinary generated document"
    assert sum(answered) >= len(CORPUS) // 2


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a: &x 1\nb: *x\n", "anchors vanish in rapidyaml's JSON"),
        ("a: !!str 1\n", "tags vanish in rapidyaml's JSON"),
        ("a: ~\n", "null to libyaml, text to rapidyaml"),
        ("a: 12.\n", "the JSON emitter rewrites 12. as 12.0"),
        ("a: 1\na: 2\n", "duplicate keys are the strict loader's to refuse"),
        ("a: x\rb: y\r", "a lone CR is a line break to YAML, text to rapidyaml"),
        ("a: [?x]\n", "flow collections are left to the strict loader"),
        ("a: \ufeffx\n", "a BOM inside a document"),
        ("a: x\n---\nb: y\n", "a second document"),
    ],
)
def test_known_rapidyaml_differences_are_declined(text: str, reason: str) -> None:
    assert fast_yaml.load_rapidyaml(text) is None, reason


@needs_events
@pytest.mark.parametrize(
    "text",
    [
        "a: &x 1\nb: *x\n",
        "a: &x 1\n",
        "a: !!str 1\n",
        "a: ! x\n",
        "a: !!null ''\n",
        "a: 1\na: 2\n",
        "null: x\n",
        ": x\n",
        "? [a]\n: x\n",
        "? {a: 1}\n: x\n",
        "a: [?x]\n",
        "a: {?x: y}\n",
        'a: "x\n  \\q"\nb: [b, ?c]\n',  # the '?' screen's token scan meets a syntax error first
        "a: x\n---\nb: y\n",
        "%YAML 1.1\n---\na: 1\n",
        "- a\n",
        "just text\n",
        "",
        "a: [b\n",
        "a: 'b\n",
        "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 70)) + "  " * 70 + "v\n",
        "a: " + "[" * 70 + "]" * 70 + "\n",
    ],
)
def test_the_events_engine_declines_what_the_strict_loader_refuses_or_might(text: str) -> None:
    """The strict loader refuses each of these, or accepts it by a rule this engine leaves to it (an anchor
    never aliased, the non-specific tag '!', a directive): its words and positions, not ours."""
    assert fast_yaml.load_events(text) is None
    assert fast_yaml.events_decline_reason(text)


@needs_events
def test_the_events_engine_nests_as_deep_as_the_strict_loader_allows() -> None:
    text = "a: " + "[" * 63 + "x" + "]" * 63 + "\n"  # 64 collections: the strict loader's limit
    assert fast_yaml.load_events(text) == load_strict(text)


_edit = st.tuples(
    st.floats(min_value=0, max_value=1, exclude_max=True),
    st.sampled_from(["insert", "delete", "replace"]),
    st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=3)),
    st.integers(min_value=1, max_value=6),
)


def _mutate(text: str, edits: list[tuple[float, str, str, int]]) -> str:
    for where, how, token, span in edits:
        at = int(where * (len(text) + 1))
        if how == "insert":
            text = text[:at] + token + text[at:]
        elif how == "delete":
            text = text[:at] + text[at + span :]
        else:
            text = text[:at] + token + text[at + len(token) :]
    return text


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(CORPUS + EDGE_CASES), edits=st.lists(_edit, min_size=1, max_size=4))
def test_mutated_documents_agree(base: str, edits: list[tuple[float, str, str, int]]) -> None:
    assert_agrees(_mutate(base, edits))


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.text(max_size=8), st.integers().map(str)),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(min_size=1, max_size=5), inner, max_size=3),
        max_leaves=12,
    )
)
def test_generated_structures_agree(value: Any) -> None:
    """Documents written by a YAML emitter from arbitrary structures, in block and flow style."""
    import yaml

    for flow in (False, True):
        assert_agrees(yaml.safe_dump({"k": value}, default_flow_style=flow, allow_unicode=True))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("name", ENGINES)
def test_the_fast_path_does_not_leak(name: str) -> None:
    """ryml.emit_json leaks its output buffer (~4 KB a call): 20,000 documents would add ~80 MB. The C
    module owns references and libyaml's parser: a leak of either grows as fast; declines included."""
    load = ENGINES[name]
    texts = [CORPUS[-1], "a: &x 1\n", "a: [b\n", "a: 1\na: 2\n", "a:\n  - [x, {b: c}]\n  - 1\n- x\n"]
    for _ in range(400):
        for text in texts:
            load(text)
    before = _rss_bytes()
    for _ in range(4_000):
        for text in texts:
            load(text)
    assert _rss_bytes() - before < 20 * 2**20


# Real writers' YAML (harness/writers.py; the npm side in tests/writers/): PyYAML (default and allow_unicode), ruamel.yaml, js-yaml and npm
# `yaml`, block and flow style, on articles whose text hypothesis draws (quotes, backslashes, unicode, long
# strings, look-alike values, empty and nested lists). Agreement on every document; the answer rate per
# writer and style is asserted separately, and its failure lists what was declined and why.
def _node_writers() -> Any:
    from harness import writers as corpora

    if corpora.node_available():
        return corpora.NodeWriters()
    if os.environ.get("CI") == "true":
        pytest.fail("the npm writers are not installed: run `npm ci --prefix tests/writers --no-audit --no-fund`")
    pytest.skip("node or the npm writers are not installed (npm ci --prefix tests/writers)")


def _writer_strategies() -> Any:
    from harness import writers as corpora

    # Any character a seed may hold once extract() has let it through (no controls, surrogates,
    # non-characters, U+2028/U+2029 or BOM); the writers' hazards come from corpora.PIECES.
    chars = st.characters(blacklist_categories=("Cc", "Cs", "Cn", "Zl", "Zp"), blacklist_characters="\ufeff")
    piece = st.sampled_from(corpora.PIECES) | st.text(chars, min_size=1, max_size=6)
    text = (
        st.lists(piece, max_size=12).map(" ".join)
        | st.lists(piece, min_size=30, max_size=60).map(" ".join)  # long: writers fold these
        | st.lists(piece, max_size=8).map("".join)
        | st.sampled_from(corpora.LOOKALIKES)
    )

    @st.composite
    def article(draw: Any) -> dict[str, Any]:
        doc = corpora.article(draw(st.randoms(use_true_random=False)))
        doc["title"] = draw(text)
        doc["excerpt"] = draw(st.none() | text)
        doc["provider"]["name"] = draw(text)
        doc["topics"] = draw(st.lists(text, max_size=4))
        doc["nested"] = draw(st.lists(st.lists(text, max_size=3), max_size=3))  # empty and nested lists
        return doc

    return article()


_WRITER_EXAMPLES = 200  # hypothesis examples (one article each) per style: CI-cheap, seconds
_ANSWER_RATE = 0.98


@functools.cache
def _writer_tally(flow: bool) -> dict[str, tuple[int, list[tuple[str, str]]]]:
    """Per writer: valid documents, and the declined ones with decline_reason. Asserts agreement on all."""
    from harness import writers as corpora

    node = _node_writers()
    valid = dict.fromkeys(corpora.WRITERS, 0)
    declined: dict[str, list[tuple[str, str]]] = {w: [] for w in corpora.WRITERS}

    @settings(
        max_examples=_WRITER_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(doc=_writer_strategies())
    def run(doc: dict[str, Any]) -> None:
        for writer in corpora.WRITERS:
            for text in corpora.emit(writer, [doc], flow, node):
                answered = assert_agrees(text)
                if _CONTROL.search(text) or _YAML_BREAKS.search(text) or isinstance(_strict(text), ProblemError):
                    continue  # not a valid document: the strict loader refuses it (the fast path agreed)
                valid[writer] += 1
                if not answered:
                    declined[writer].append((fast_yaml.decline_reason(text) or "?", text))

    try:
        run()
    finally:
        node.close()
    return {w: (valid[w], declined[w]) for w in corpora.WRITERS}


@pytest.mark.parametrize("flow", [False, True], ids=["block", "flow"])
def test_real_writers_agree(flow: bool) -> None:
    tally = _writer_tally(flow)
    assert all(valid > 0 for valid, _ in tally.values())


@needs_events
@pytest.mark.parametrize("flow", [False, True], ids=["block", "flow"])
def test_real_writers_are_answered(flow: bool) -> None:
    tally = _writer_tally(flow)
    short = []
    for writer, (valid, declined) in tally.items():
        rate = 1 - len(declined) / valid
        if rate < _ANSWER_RATE:
            reasons = collections.Counter(reason for reason, _ in declined)
            examples = "\n".join(f"    {reason}: {text[:160]!r}" for reason, text in declined[:5])
            short.append(f"{writer}: answered {rate:.1%} of {valid}; declined {dict(reasons)}\n{examples}")
    assert not short, "the fast path declines too many writer documents:\n" + "\n".join(short)
