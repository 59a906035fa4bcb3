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


# --- timestamps: one table of accepted forms (pipeline/read/timestamps.py) ----------------------

from datetime import UTC, datetime, timedelta, timezone  # noqa: E402

from pipeline.read import timestamps  # noqa: E402


def _published(value: str) -> object:
    """publishedDateTime as both contract checks read it (compiled and interpreted agree)."""
    answers = []
    for compiled in (True, False):
        result = check_document({**BASE, "publishedDateTime": value}, compiled=compiled)
        answers.append(result.values["publishedDateTime"] if isinstance(result, Checked) else result[0])
    assert answers[0] == answers[1]
    return answers[0]


@pytest.mark.parametrize("form", timestamps.FORMS, ids=lambda f: f.example)
def test_every_documented_form_is_accepted(form: timestamps.Form) -> None:
    got = _published(form.example)
    assert isinstance(got, datetime) and got.tzinfo is not None and got.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020-01-17 12:35:00 UTC", datetime(2020, 1, 17, 12, 35, tzinfo=UTC)),  # GNews
        ("2020-01-17T12:35:00GMT", datetime(2020, 1, 17, 12, 35, tzinfo=UTC)),
        ("2021-10-20 16:00:24 +0000", datetime(2021, 10, 20, 16, 0, 24, tzinfo=UTC)),
        ("Fri, 17 Jan 2020 12:35:00 +0100", datetime(2020, 1, 17, 11, 35, tzinfo=UTC)),  # RSS pubDate
        ("17 Jan 2020 12:35 GMT", datetime(2020, 1, 17, 12, 35, tzinfo=UTC)),
        ("Mon, 02 Dec 2024 23:30:00 -0530", datetime(2024, 12, 3, 5, 0, tzinfo=UTC)),
        ("2023-10-08T16:23:00.1234567Z", datetime(2023, 10, 8, 16, 23, 0, 123456, tzinfo=UTC)),
    ],
)
def test_real_feed_forms_read_to_the_instant_they_name(text: str, expected: datetime) -> None:
    assert _published(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2020-01-01T00:00:00+05:60", "minutes are out of range"),  # fromisoformat would read +06:00
        ("2020-01-01T00:00:00+24:00", "hours are out of range"),
        ("2020-01-01T10:00:00 EST", "'EST' is a name, not an offset"),
        ("17 Jan 2020 12:35:00 CET", "'CET' is a name, not an offset"),
        ("2020-01-01 10:00 Europe/Paris", "'Europe/Paris' is a name"),
        ("Sat, 17 Jan 2020 12:35:00 +0000", "says 'Sat', but 2020-01-17 is a Fri"),
        ("Fri, 17 Jan 20 12:35:00 +0000", "two-digit year"),
        ("17 Foo 2020 12:35 GMT", "names the month 'Foo'"),
        ("31 Feb 2020 10:00 GMT", "not a real date/time"),
        ("Sat, 31 Dec 2016 23:59:60 GMT", "leap second"),
    ],
)
def test_ambiguous_or_impossible_forms_are_refused_naming_the_part(text: str, says: str) -> None:
    problem = _published(text)
    assert isinstance(problem, Problem) and problem.reason == "bad_timestamp"
    assert says in problem.message, problem.message


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
    st.sampled_from(["iso", "iso-compact", "rfc2822", "utc-name"]),
)
def test_any_instant_written_in_any_form_reads_back(moment: datetime, minutes: int, form: str) -> None:
    zone = timezone(timedelta(minutes=minutes))
    local = moment.replace(microsecond=0, tzinfo=zone)
    sign, off = ("-" if minutes < 0 else "+"), abs(minutes)
    day = f"{local.year:04d}-{local:%m-%d}"  # strftime's %Y does not pad years before 1000
    if form == "iso":
        text = local.isoformat()
    elif form == "iso-compact":
        text = f"{day} {local:%H:%M:%S} {sign}{off // 60:02d}{off % 60:02d}"
    elif form == "rfc2822":
        text = f"{local:%a, %d %b} {local.year:04d} {local:%H:%M:%S} {sign}{off // 60:02d}{off % 60:02d}"
    else:
        local = local.replace(tzinfo=UTC)
        text = f"{day} {local:%H:%M:%S} UTC"
    got = timestamps.parse(text)
    try:
        expected: object = local.astimezone(UTC)
    except OverflowError:
        assert isinstance(got, str) and "outside years" in got
        return
    assert got == expected, text
