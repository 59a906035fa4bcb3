"""The compiled contract checker and the URL fast path give exactly what the interpreted code gives.

``check_document`` runs a checker generated from the declaration; ``compiled=False`` runs the
interpreted walk it was generated from. They must agree on values, unknown keys and every problem
(reason, message, field, order) for the seeds, the hostile corpus, generated documents and documents
whose values hypothesis replaces with every kind of wrong, odd or borderline value.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from harness import generate
from pipeline.read import normalize
from pipeline.read.contract import Checked, check_document
from pipeline.read.extract import decode, split_frontmatter
from pipeline.read.problems import ProblemError

ROOT = Path(__file__).resolve().parent.parent


def _metas() -> list[dict[str, Any]]:
    files = sorted(p for p in (ROOT / "seeds").rglob("*") if p.is_file())
    files += sorted(p for p in (ROOT / "tests" / "data" / "hostile").iterdir() if p.suffix == ".md")
    texts = [p.read_bytes() for p in files] + [generate.document(i, 200, 5).encode() for i in range(200)]
    out = []
    for data in texts:
        try:
            meta, _ = split_frontmatter(decode(data))
        except ProblemError:
            continue
        if isinstance(meta, dict):
            out.append(meta)
    return out


METAS = _metas()


def _same(meta: Any) -> None:
    compiled = check_document(copy.deepcopy(meta))
    interpreted = check_document(copy.deepcopy(meta), compiled=False)
    if isinstance(interpreted, Checked):
        assert isinstance(compiled, Checked)
        assert compiled.values == interpreted.values
        assert compiled.unknown_keys == interpreted.unknown_keys
    else:
        assert compiled == interpreted  # Problem is a dataclass: reason, message, line, column, field


def test_corpus_checks_the_same_both_ways() -> None:
    for meta in METAS:
        _same(meta)
    assert any(isinstance(check_document(m), Checked) for m in METAS)
    assert any(not isinstance(check_document(m), Checked) for m in METAS)


ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            " ",
            "true",
            "false",
            "True",
            "yes",
            "0",
            "-0",
            "+1",
            "007",
            "12",
            "12.0",
            "1e3",
            "9223372036854775808",
            "-9223372036854775809",
            "999999999999999999",
            " 42 ",
            "2023-10-08T16:23:00Z",
            "2023-10-08T16:23:00+02:00",
            "2023-02-30T10:00:00Z",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "2023-10-08 16:23:00z",
            "2023-10-08T16:23:00.1234567Z",
            "2023-10-08T23:59:60Z",
            "2023-10-08",
            "20231008T162300Z",
            "1696782180",
            "https://example.com/a?b=c#d",
            "HTTPS://EXAMPLE.COM/",
            "http://example.com:8080/x",
            "http://u:p@h.com/",
            "https://bücher.de/",
            "https://h.com./x",
            "ftp://x.com/",
            "https://",
            "http://[::1]/",
            "http://h.com:99999/",
            " https://h.com/x ",
            "https://h .com/",
            "https://-.com/",
            "https://h.com/a\tb",
            "https://h.com/a\x01",
            "http://[2001:db8::1]:8080/a",
            "http://[2001:db8::1%eth0]/",
            "http://[v1.x]/",
            "http://x[::1]/",
            "javascript:alert(1)",
            "1" * 5000,
            "-" + "9" * 4400 + ".0",
        ]
    ),
    st.lists(st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
)


def _paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [at] if at else []
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _paths(v, (*at, i))
    return found


@settings(max_examples=600, deadline=None)
@given(index=st.integers(min_value=0), picks=st.lists(st.tuples(st.integers(min_value=0), ODD_VALUES), max_size=4))
def test_mutated_documents_check_the_same_both_ways(index: int, picks: list[tuple[int, Any]]) -> None:
    meta = copy.deepcopy(METAS[index % len(METAS)])
    for where, value in picks:
        paths = _paths(meta)
        if not paths:
            break
        path = paths[where % len(paths)]
        parent = meta
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = value
    _same(meta)


def _slow_canonical_url(url: str) -> str:
    return normalize.parsed_canonical_url(url)


URL_PIECES = st.sampled_from(
    [
        "x",
        "",
        ":",
        "//",
        "/",
        "?",
        "#",
        "@",
        ".",
        "-",
        "a",
        "B1",
        "é",
        " ",
        "%20",
        "80",
        "[",
        "]",
        "\\",
        ";",
        "=",
        "&",
        "\t",
        "\x01",
        "\x7f",
        "\x85",
    ]
)
URLS = st.tuples(
    st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "", " https://"]),
    st.sampled_from(
        [
            "example.com",
            "a",
            "Example.COM",
            "h.com.",
            "bücher.de",
            "x-y.org",
            "",
            "u:p@h.com",
            "h.com:443",
            "h.com:8080",
            "1.2.3.4",
            "[::1]",
            "[2001:DB8::1]:8080",
            "[v1.x]",
        ]
    ),
    st.sampled_from(["", "/", "/a/B", "/a b", "/%7e"]),
    st.sampled_from(["", "?", "?q=1", "?a&b", "?#"]),
    st.sampled_from(["", "#", "#f", "# f"]),
    st.lists(URL_PIECES, max_size=6).map("".join),
).map("".join)


@settings(max_examples=600, deadline=None)
@given(URLS)
def test_canonical_url_fast_path_matches_urlsplit(url: str) -> None:
    try:
        expected = _slow_canonical_url(url)
    except ValueError:  # urlsplit refuses it (bad port, brackets): the fast path must not answer
        assert normalize._PLAIN_URL(url) is None
        return
    assert normalize.canonical_url(url) == expected


def test_canonical_url_fast_path_is_taken_for_plain_urls() -> None:
    assert normalize._PLAIN_URL("https://www.example.com/a/b?c=1#d")
    assert not normalize._PLAIN_URL("https://Example.com/")
