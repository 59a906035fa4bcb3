"""Values and identities: hostile values are refused with a message naming the part, never merged or changed.

IPv6 hosts keep their brackets in the identity, URLs with white space or controls inside are refused
(urlsplit would drop TAB/CR/LF silently), image URLs are http(s) URLs, a number too long for ``int()`` is
``bad_integer``, and a required key missing but for case, space or an invisible character is named.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.read.contract import Checked, check_document
from pipeline.read.extract import Loaded, extract
from pipeline.read.normalize import Source, article_id, canonical_url
from pipeline.read.problems import Problem
from tests.conftest import run_pipeline
from tests.test_quarantine import by_path, table

BASE = {"title": "A title", "webUrl": "https://example.com/a"}


def _doc(**fields: str) -> bytes:
    lines = [f"{k}: {v}" for k, v in fields.items()]
    return ("---\n" + "\n".join(lines) + "\n---\nBody.\n").encode()


def _problem(meta: dict[str, object]) -> Problem:
    for compiled in (True, False):
        result = check_document(meta, compiled=compiled)
        assert isinstance(result, list), result
    return result[0]


def test_ipv6_hosts_with_and_without_a_port_are_two_articles() -> None:
    a, b = "http://[2001:db8::1]:8080/a", "http://[2001:db8::1:8080]/a"
    assert canonical_url(a) == a and canonical_url(b) == b
    assert article_id(a) != article_id(b)
    assert article_id("http://[2001:DB8:0:0::1]:80/a") == article_id("http://[2001:db8::1]/a")


@given(st.ip_addresses(v=6), st.one_of(st.none(), st.integers(1, 65535)))
def test_ipv6_identity_is_canonical_and_idempotent(address: object, port: int | None) -> None:
    url = f"http://[{address}]{'' if port is None else f':{port}'}/p"
    assert isinstance(check_document({**BASE, "webUrl": url}), Checked)
    once = canonical_url(url)
    assert canonical_url(once) == once and "[" in once


@pytest.mark.parametrize("char", ["\t", "\r", "\n", "\x01", "\x7f", "\x85", " ", "\u00a0"])
def test_white_space_or_control_inside_a_url_is_refused(char: str) -> None:
    problem = _problem({**BASE, "webUrl": f"https://example.com/a{char}b"})
    assert (problem.reason, problem.field) == ("bad_url", "webUrl")
    assert f"U+{ord(char):04X}" in problem.message


def test_surrounding_space_of_a_url_is_trimmed_as_before() -> None:
    assert isinstance(check_document({**BASE, "webUrl": " https://example.com/a "}), Checked)


@pytest.mark.parametrize("host", ["[v1.x]", "[2001:db8::1%eth0]", "x[::1]", "[1.2.3.4]"])
def test_a_host_in_brackets_must_be_an_ipv6_address(host: str) -> None:
    problem = _problem({**BASE, "webUrl": f"http://{host}/a"})
    assert problem.reason == "bad_url"


def test_image_urls_are_http_urls() -> None:
    for images in ([{"url": "javascript:alert(1)"}],):
        problem = _problem({**BASE, "images": images})
        assert (problem.reason, problem.field) == ("bad_url", "images[0].url")
    rel = [{"webUrl": "https://x.org/r", "images": [{"url": "data:text/html,hi"}]}]
    assert _problem({**BASE, "related": rel}).field == "related[0].images[0].url"


def test_a_number_longer_than_int_allows_is_bad_integer() -> None:
    data = _doc(title="T", webUrl="https://example.com/a", quality="9" * 5000)
    result = extract(data, Source("n.md", "0" * 64), "r")
    assert isinstance(result, Problem) and (result.reason, result.field) == ("bad_integer", "quality")
    assert len(result.message) < 200


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("Title", "found 'Title' (differs in case)"),
        ('"title "', "found 'title ' (U+0020 SPACE after it)"),
        ('"\\u200btitle"', "found '\\u200btitle' (U+200B ZERO WIDTH SPACE before it)"),
    ],
)
def test_a_near_miss_of_a_required_key_is_named(key: str, says: str) -> None:
    data = ("---\n" + f"{key}: A title\nwebUrl: https://example.com/a\n---\nBody.\n").encode()
    result = extract(data, Source("k.md", "0" * 64), "r")
    assert isinstance(result, Problem) and (result.reason, result.field) == ("missing_field", "title")
    assert says in result.message, result.message


def test_ipv6_pair_loads_as_two_articles_end_to_end(tmp_path: Path) -> None:
    seeds, warehouse = tmp_path / "seeds", tmp_path / "wh"
    seeds.mkdir()
    (seeds / "a.md").write_bytes(_doc(title="A", webUrl='"http://[2001:db8::1]:8080/a"'))
    (seeds / "b.md").write_bytes(_doc(title="B", webUrl='"http://[2001:db8::1:8080]/a"'))
    (seeds / "tab.md").write_bytes(_doc(title="C", webUrl='"https://example.com/x\\ty"'))
    proc = run_pipeline(seeds, warehouse)
    assert proc.returncode == 0, proc.stderr
    files = by_path(table(warehouse, "source_files"))
    assert files["a.md"]["status"] == files["b.md"]["status"] == "loaded"
    assert (files["tab.md"]["status"], files["tab.md"]["reason"]) == ("rejected", "bad_url")
    assert isinstance(extract((seeds / "a.md").read_bytes(), Source("a.md", "0" * 64), "r"), Loaded)
