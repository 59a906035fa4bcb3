"""The data model is declared once (pipeline/schema.py): the contract, the row builder and the checks follow it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import schema
from pipeline.read.contract import Checked, _Checker, check_document, fields_of
from pipeline.read.normalize import article_id, canonical_host, canonical_url, compile_rows, provider_id

SEED = {
    "title": "A title",
    "webUrl": "https://example.com/a",
    "provider": {"name": "Example", "domain": "example.com"},
    "topics": ["x", "y"],
    "author": "Ada",
}


def test_an_optional_field_mapped_to_a_new_column_is_one_declaration() -> None:
    """A copy of the declaration with one more articles column: contract, rows and Arrow schema all follow."""
    author = schema._f("author", "author", "text", "author as written", "who wrote the article")
    articles = dataclasses.replace(schema.ARTICLES, columns=(*schema.ARTICLES.columns, author))
    tables = (articles, *schema.DOCUMENT_TABLES[1:])

    before = check_document(SEED)
    assert isinstance(before, Checked) and "author" in before.unknown_keys  # today: kept in extra

    document = fields_of(tables)
    assert [f.key for f in document if f.key == "author"] == ["author"]
    checked = check_document(SEED, document)
    assert isinstance(checked, Checked) and "author" not in checked.unknown_keys

    rows = compile_rows(tables)(checked.values, "aid", "", "a.md", "0" * 64, "r")
    row = dict(zip(articles.column_names, rows[0][0], strict=True))
    assert row["author"] == "Ada" and row["title"] == "A title" and row["extra"] is None
    assert articles.arrow_schema().field("author").type == schema.ARROW_TYPES["string"]

    bad = check_document({**SEED, "author": ["not", "text"]}, document)
    assert isinstance(bad, list) and (bad[0].reason, bad[0].field) == ("wrong_type", "author")


def test_every_document_column_says_where_its_value_comes_from() -> None:
    for table in schema.DOCUMENT_TABLES:
        assert table.entry is not None and table.sort_key and set(table.sort_key) <= set(table.column_names)
        for col in table.columns:
            assert (col.field is None) != (col.derived is None), f"{table.name}.{col.name}"
            if col.derived:
                assert col.derived in schema.DERIVATIONS
            if col.field:
                assert col.type == schema.KIND_TYPES[col.field.kind]


def test_references_name_existing_columns() -> None:
    for table in schema.TABLES:
        for col in table.columns:
            if col.references:
                target = schema.table(col.references.table)
                assert col.references.column in target.column_names, f"{table.name}.{col.name}"


# --- canonical hosts: one spelling per host, for article, related and provider ids alike -------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("EXAMPLE.org.", "example.org"),
        (" Example.ORG ", "example.org"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("BÜCHER.de.", "xn--bcher-kva.de"),
    ],
)
def test_hosts_that_are_one_host_get_one_provider_id(a: str, b: str) -> None:
    assert canonical_host(a) == canonical_host(b) and provider_id(a) == provider_id(b)


def test_urls_on_one_host_get_one_article_id() -> None:
    assert article_id("https://bücher.de/x?a=1") == article_id("https://xn--bcher-kva.de/x?a=1")
    assert article_id("https://EXAMPLE.org./Path") == article_id("https://example.org/Path")
    assert article_id("https://example.org/Path") != article_id("https://example.org/path")  # paths keep case
    assert canonical_url("https://Bücher.DE.:443/a#frag") == "https://xn--bcher-kva.de/a"


@given(st.from_regex(r"[A-Za-z0-9äöüß-]{1,12}(\.[A-Za-z0-9äöüß-]{1,12}){0,2}\.?", fullmatch=True))
def test_canonical_host_is_idempotent(host: str) -> None:
    once = canonical_host(host)
    assert canonical_host(once) == once


# --- timestamps: every RFC 3339 timestamp; messages that name the real problem ----------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-10-05T14:30:00.123456789Z", datetime(2023, 10, 5, 14, 30, 0, 123456, tzinfo=UTC)),
        ("2023-10-05T14:30:00.1Z", datetime(2023, 10, 5, 14, 30, 0, 100000, tzinfo=UTC)),
        ("2023-10-05t14:30:00z", datetime(2023, 10, 5, 14, 30, tzinfo=UTC)),
        ("2023-10-05T16:30:00.5+02:00", datetime(2023, 10, 5, 14, 30, 0, 500000, tzinfo=UTC)),
        ("2023-10-05 14:30:00-00:00", datetime(2023, 10, 5, 14, 30, tzinfo=UTC)),
    ],
)
def test_rfc3339_timestamps_load_to_the_microsecond(text: str, expected: datetime) -> None:
    checker = _Checker()
    assert checker.timestamp(text, "publishedDateTime") == expected and not checker.problems


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2016-12-31T23:59:60Z", "leap second"),
        ("20231005T143000Z", "basic format"),
        ("1696775400", "the number"),
        ("2023-02-30T10:00:00Z", "not a real date/time"),
        ("next tuesday", "expected an RFC 3339"),
    ],
)
def test_timestamp_messages_name_the_problem(text: str, says: str) -> None:
    checker = _Checker()
    assert checker.timestamp(text, "publishedDateTime") is None
    (problem,) = checker.problems
    assert problem.reason == "bad_timestamp" and says in problem.message and problem.field == "publishedDateTime"
