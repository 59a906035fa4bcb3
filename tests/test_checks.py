"""The declared post-load checks catch what they declare; the views and the providers' naming rule, given/expect.

Each check test takes a real built snapshot, breaks one table in one way, and expects exactly the
one failure line that names it (and none for the intact snapshot). The view and provider tests
give small hand-written tables and expect hand-written rows, as jaffle-shop keeps unit tests
beside its models.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import schema
from pipeline.storage.location import Location
from pipeline.warehouse import checks, commits, merge

from .conftest import SEEDS, run_pipeline

Break = Callable[[pa.Table], pa.Table]


def _set(column: str, value: object) -> Break:
    def apply(t: pa.Table) -> pa.Table:
        values = t.column(column).to_pylist()
        values[0] = value
        return t.set_column(t.column_names.index(column), column, pa.array(values, t.schema.field(column).type))

    return apply


def _duplicate_first(t: pa.Table) -> pa.Table:
    return pa.concat_tables([t, t.slice(0, 1)])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Location, dict[str, list[str]]]:
    """A real warehouse of the shipped seeds plus one rejected file, and its newest snapshot's files."""
    root = tmp_path_factory.mktemp("checks")
    seeds = root / "seeds"
    shutil.copytree(SEEDS, seeds)
    (seeds / "broken.md").write_text("no frontmatter here\n", encoding="utf-8")
    run_pipeline(seeds, root / "warehouse")
    wh = Location.parse(str(root / "warehouse"))
    snap = commits.require_newest(wh)
    return wh, {t.name: snap.table_files(t.name) for t in schema.TABLES}


BREAKS: list[tuple[str, Break, str]] = [
    ("articles", _duplicate_first, "articles: 1 duplicate keys (article_id)"),
    ("articles", _set("title", None), "articles.title: 1 NULLs in a NOT NULL column"),
    ("articles", _set("article_id", "NOT-AN-ID"), "articles.article_id: 1 malformed ids"),
    ("articles", _set("provider_id", "0000000000000000"), "articles: 1 rows whose provider_id is not in providers"),
    ("article_topics", _set("article_id", "0123456789abcdef"), "article_topics: 1 rows without a parent in articles"),
    ("rejects", _set("reason", "made_up"), "rejects.reason: 1 rows with a value outside the accepted ones"),
    ("rejects", _set("stage", "later"), "rejects.stage: 1 rows with a value outside the accepted ones"),
    ("source_files", _set("status", "maybe"), "source_files.status: 1 rows with a value outside the accepted ones"),
    ("load_runs", _set("status", "running"), "load_runs.status: 1 rows with a value outside the accepted ones"),
]


def test_an_intact_snapshot_passes_every_check(built) -> None:
    wh, files = built
    assert checks.table_checks(wh, files, "256MB") == []


@pytest.mark.parametrize(
    ("table", "brk", "expected"), BREAKS, ids=[b[2].split(":")[0] + "-" + b[2][-20:] for b in BREAKS]
)
@pytest.mark.parametrize("copied", [False, True], ids=["read-in-place", "copied-first"])
def test_each_declared_check_catches_its_violation(
    built, tmp_path: Path, table: str, brk: Break, expected: str, copied: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways a local table is checked: read in place, or (a table of many files) copied into DuckDB first."""
    if copied:
        monkeypatch.setattr(checks, "MANY_FILES", 0)
    wh, files = built
    data = pq.read_table(files[table])
    broken = tmp_path / f"{table}.parquet"
    pq.write_table(brk(data), broken)
    failures = checks.table_checks(wh, {**files, table: [str(broken)]}, "256MB")
    assert expected in failures, failures  # (a changed id also orphans child rows: other lines may follow)
    # Every other table as a previous snapshot checked them: the checks that read this one still run ...
    others = {t.name for t in schema.TABLES} - {table}
    assert expected in checks.table_checks(wh, {**files, table: [str(broken)]}, "256MB", unchanged=others)
    # ... and a check whose every table is unchanged is not run again (so a no-op checks only load_runs).
    assert checks.table_checks(wh, {**files, table: [str(broken)]}, "256MB", unchanged=others | {table}) == []


def test_a_no_op_run_checks_only_load_runs(tmp_path: Path) -> None:
    """A no-op's snapshot names the previous snapshot's files for every table but load_runs, and both
    commits record the same checks: the check stage runs only the checks of load_runs."""
    seeds = tmp_path / "seeds"
    shutil.copytree(SEEDS, seeds)
    run_pipeline(seeds, tmp_path / "warehouse")
    run_pipeline(seeds, tmp_path / "warehouse")
    wh = Location.parse(str(tmp_path / "warehouse"))
    newest = commits.require_newest(wh)
    previous = commits.read_version(wh, newest.version - 1)
    assert previous is not None and newest.meta["checks"] == previous.meta["checks"] == checks.DIGEST
    unchanged = checks.unchanged_tables(newest.files, previous.files)
    assert unchanged == {t.name for t in schema.TABLES} - {"load_runs"}
    assert {c.table for c in checks.CHECKS if not c.tables() <= unchanged} == {"load_runs"}


def test_accepted_reasons_are_the_registry() -> None:
    from pipeline.read.problems import REASONS, STAGES

    declared = {(c.table, c.columns[0]): set(c.values) for c in checks.CHECKS if c.kind == "accepted_values"}
    assert declared[("rejects", "reason")] == set(REASONS) == declared[("source_files", "reason")]
    assert declared[("rejects", "stage")] == set(STAGES)


# --- the views, given/expect ------------------------------------------------------------------------


def _table(name: str, rows: list[dict[str, object]]) -> pa.Table:
    target = pa.schema([f.with_nullable(True) for f in schema.table(name).arrow_schema()])  # only what a test needs
    full = [{f.name: r.get(f.name) for f in target} for r in rows]
    return pa.Table.from_pylist(full, schema=target)


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _view(name: str, tables: dict[str, pa.Table]) -> list[dict[str, object]]:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'America/New_York'")  # UTC date parts whatever the session's zone
        for t in schema.TABLES:
            con.register(t.name, tables.get(t.name, t.arrow_schema().empty_table()))
        view = next(v for v in schema.VIEWS if v.name == name)
        rows = con.sql(f"SELECT * FROM ({view.sql}) ORDER BY ALL").to_arrow_table().to_pylist()
        return rows
    finally:
        con.close()


A, B, C = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"
P = "1111111111111111"
GIVEN = {
    "articles": _table(
        "articles",
        [
            {
                "article_id": A,
                "title": "First",
                "published_at": _ts("2024-03-01T02:30:00+00:00"),
                "provider_id": P,
                "web_url": "https://x.org/a",
                "source_path": "a.md",
            },
            {
                "article_id": B,
                "title": "Second",
                "published_at": None,
                "provider_id": None,
                "web_url": "https://x.org/b",
                "source_path": "b.md",
            },
        ],
    ),  # fmt: skip
    "providers": _table("providers", [{"provider_id": P, "domain": "x.org", "name": "X", "names": ["X"]}]),
    "article_topics": _table(
        "article_topics",
        [{"article_id": A, "position": 1, "topic": "later"}, {"article_id": A, "position": 0, "topic": "first"}],
    ),
    "article_images": _table("article_images", [{"article_id": A, "position": 0, "url": "https://x.org/i.png"}]),
    "related_articles": _table(
        "related_articles",
        [
            {"article_id": A, "position": 0, "related_article_id": B, "web_url": "https://x.org/b", "title": "2nd"},
            {"article_id": A, "position": 1, "related_article_id": C, "web_url": "https://y.org/c", "title": "out"},
        ],
    ),
}


def test_article_facts_given_expect() -> None:
    rows = _view("article_facts", GIVEN)
    first, second = rows
    assert {k: first[k] for k in ("article_id", "published_date", "published_year", "published_month")} == {
        "article_id": A, "published_date": datetime(2024, 3, 1).date(), "published_year": 2024, "published_month": 3,
    }  # fmt: skip
    # 02:30 UTC is still 29 February in New York, the session's zone above: the view's date parts are UTC.
    assert first["published_year_month"] == "2024-03"
    assert first["provider_name"] == "X" and first["provider_domain"] == "x.org"
    assert first["topics"] == ["first", "later"] and first["topic_count"] == 2  # in position order
    assert (first["image_count"], first["related_count"], first["related_seed_count"]) == (1, 2, 1)
    assert second["article_id"] == B and second["published_year_month"] is None
    assert (second["topics"], second["topic_count"], second["image_count"], second["related_count"]) == ([], 0, 0, 0)
    assert second["provider_name"] is None


def test_related_resolved_given_expect() -> None:
    rows = _view("related_resolved", GIVEN)
    assert [(r["position"], r["target_is_seed"], r["target_title"], r["target_source_path"]) for r in rows] == [
        (0, True, "Second", "b.md"),
        (1, False, None, None),
    ]


# --- the providers' naming rule, given/expect ---------------------------------------------------------


def test_providers_naming_rule_given_expect(tmp_path: Path) -> None:
    """The name used by the most rows (articles plus related entries) wins; ties go to the alphabetically first."""
    q = "2222222222222222"
    arts = _table(
        "articles",
        [
            {"article_id": A, "title": "t", "provider_id": P, "provider_domain": "X.org.", "provider_name": "Zed"},
            {"article_id": B, "title": "t", "provider_id": P, "provider_domain": "x.org", "provider_name": "Ex"},
            {"article_id": C, "title": "t", "provider_id": q, "provider_domain": "q.org", "provider_name": "Beta"},
        ],
    )
    rel = _table(
        "related_articles",
        [
            {"article_id": A, "position": 0, "related_article_id": B, "web_url": "u", "provider_id": P,
             "provider_domain": "x.org", "provider_name": "Zed"},
            {"article_id": A, "position": 1, "related_article_id": B, "web_url": "u", "provider_id": q,
             "provider_domain": "q.org", "provider_name": "Alpha"},
        ],
    )  # fmt: skip
    pq.write_table(arts, tmp_path / "a.parquet")
    pq.write_table(rel, tmp_path / "r.parquet")
    con = duckdb.connect()
    try:
        got = merge.derive_providers(con, [str(tmp_path / "a.parquet")], [str(tmp_path / "r.parquet")])
    finally:
        con.close()
    rows = sorted(got.to_pylist(), key=lambda r: r["provider_id"])
    assert [(r["domain"], r["name"], r["names"], r["article_count"], r["related_count"]) for r in rows] == [
        ("x.org", "Zed", ["Ex", "Zed"], 2, 1),  # Zed: 2 rows, Ex: 1; the domain in its canonical form
        ("q.org", "Alpha", ["Alpha", "Beta"], 1, 1),  # a tie (1 each): the alphabetically first
    ]
