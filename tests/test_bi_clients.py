"""The warehouse with real clients: SQLAlchemy + duckdb_engine (what BI tools use), Parquet readers
(pyarrow, DuckDB, polars), a moved warehouse, and the example queries for analysts.

The SQLAlchemy test runs in its own venv, .venv-bi, built from tests/bi/requirements.txt (the
project's Prefect needs SQLAlchemy 2.1, which duckdb_engine cannot reflect with). The venv is
created once (15-40 s of venv + pip install, measured) and reused while the requirements file, the Python
version and the base interpreter stay the same.

The example queries of docs/example-queries.sql must return exactly the rows in
tests/data/example-query-results.json (keyed by each query's `-- name:`). That file was made once
with `pipeline query --format json` on a warehouse built from the shipped seeds/ and reviewed by hand
(checked against the seeds' frontmatter); no test rewrites it. After an intended change to the queries,
the seeds or the pipeline, update it the same way and review the diff like code.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pytest

from harness.envs import BI_REQUIREMENTS, BI_VENV, ensure_venv
from pipeline import schema

from .conftest import REPO, SEEDS, cli_env, open_catalog, run_cli

BI_DIR = REPO / "tests" / "bi"
PROBE = BI_DIR / "sqlalchemy_probe.py"
EXAMPLES = REPO / "docs" / "example-queries.sql"
# Expected rows of each example query on the sample warehouse, keyed by the query's `-- name:`.
EXPECTED_RESULTS = REPO / "tests" / "data" / "example-query-results.json"

TABLE_NAMES = [t.name for t in schema.TABLES]
VIEW_NAMES = [v.name for v in schema.VIEWS]

# What a BI tool infers from the type duckdb_engine reflects (SQLAlchemy's python_type). The list
# column is a known gap of duckdb_engine 0.17: it reflects as NullType (with an SAWarning), although
# queries return Python lists. Timestamps reflect as TIMESTAMP() without timezone=True, and that is
# what they are: the views hand out UTC wall time as plain TIMESTAMPs (naive datetimes holding UTC).
REFLECTED_PYTHON_TYPES: dict[str, str | None] = {
    "string": "str",
    "int64": "int",
    "int32": "int",
    "bool": "bool",
    "timestamp": "datetime",
    "list<string>": None,
}

POLARS_TYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "int64": pl.Int64(),
    "int32": pl.Int32(),
    "bool": pl.Boolean(),
    "timestamp": pl.Datetime("us", "UTC"),
    "list<string>": pl.List(pl.String()),
}


# Questions a BI tool asks about time: group by a time grain (what Superset's time grains compile to),
# filter a day range with literals, take UTC date parts. Every reader, in any time zone, must give the
# rows `pipeline query` gives; the fixed rows below make the comparison able to fail (under
# TZ=America/New_York a TIMESTAMP WITH TIME ZONE column put 2024-02-24T00:05Z on 23 February and
# found 0 rows in the day filter).
NON_UTC = "America/New_York"
TIME_QUERIES = {
    "per month": "SELECT date_trunc('month', published_at) AS month, count(*) AS n FROM articles "
    "GROUP BY ALL ORDER BY month NULLS LAST",
    "per day": "SELECT CAST(published_at AS DATE) AS day, count(*) AS n FROM articles GROUP BY ALL ORDER BY day NULLS LAST",
    "one day": "SELECT source_path, published_at FROM articles "
    "WHERE published_at >= '2024-02-24' AND published_at < '2024-02-25' ORDER BY source_path",
    "facts months": "SELECT published_year_month, strftime(published_at, '%Y-%m') AS formatted, "
    "date_trunc('month', published_at) AS month, count(*) AS n FROM article_facts GROUP BY ALL ORDER BY ALL",
    "load runs": "SELECT count(*) AS n FROM load_runs WHERE started_at <= finished_at",
}


def _text(value: Any) -> Any:
    """A value as text, the same whichever client produced it (ISO date-times with a space)."""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, str) and len(value) >= 19 and value[10] in " T" and value[4] == "-":
        return datetime.fromisoformat(value).isoformat(sep=" ")
    if value is not None and not isinstance(value, bool | int | float | str):
        return str(value)
    return value


def _time_rows(result: dict[str, Any]) -> dict[str, list[list[Any]]]:
    return {name: [[_text(v) for v in row] for row in rows] for name, rows in result.items()}


def _assert_known_time_answers(rows: dict[str, list[list[Any]]]) -> None:
    """What the shipped seeds say, in UTC (checked against their frontmatter)."""
    assert rows["one day"] == [["2024/012_1dc455e33948ba69.md", "2024-02-24 00:05:00"]], rows["one day"]
    assert ["2024-02-24", 1] in rows["per day"] and ["2024-01-16", 1] in rows["per day"], rows["per day"]
    assert all(r[0] is None or r[0].endswith("-01 00:00:00") for r in rows["per month"]), rows["per month"]
    assert sum(r[1] for r in rows["per month"]) == 15
    assert all(r[0] == r[1] and (r[0] is None or r[2].startswith(r[0])) for r in rows["facts months"])
    assert rows["load runs"] == [[1]]


def _pipeline_time_rows(warehouse: Path, cwd: Path, tz: str) -> dict[str, list[list[Any]]]:
    out = {}
    for name, sql in TIME_QUERIES.items():
        proc = run_cli("query", sql, "--warehouse", str(warehouse), "--format", "json", cwd=cwd, env=cli_env(TZ=tz))
        out[name] = [list(r.values()) for r in json.loads(proc.stdout)]
    return _time_rows(out)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def bi_python() -> Path:
    """Interpreter of .venv-bi, created from tests/bi/requirements.txt (or reused while it matches)."""
    return ensure_venv(BI_VENV, BI_REQUIREMENTS)[0]


def _catalog_counts(warehouse: Path, names: list[str]) -> dict[str, int]:
    con = open_catalog(warehouse)
    try:
        return {n: con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
    finally:
        con.close()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pins() -> dict[str, str]:
    pins = {}
    for line in BI_REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower().replace("-", "_")] = version.strip()
    return pins


# --- 1. SQLAlchemy + duckdb_engine ------------------------------------------------------------


@pytest.mark.timeout(900)  # the first run includes creating .venv-bi
def test_sqlalchemy_duckdb_engine_reflects_and_queries_catalog(bi_python: Path, sample: Path, tmp_path: Path) -> None:
    catalog = sample / "catalog.duckdb"
    before = _sha256(catalog)
    con = open_catalog(sample)
    try:
        catalog_views = {
            r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        }
        catalog_tables = {
            r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT internal").fetchall()
        }
        # Derived views have no column list in the schema: DuckDB's own DESCRIBE is the reference.
        view_columns = {v: [r[0] for r in con.execute(f'DESCRIBE "{v}"').fetchall()] for v in VIEW_NAMES}
    finally:
        con.close()
    assert set(TABLE_NAMES + VIEW_NAMES) <= catalog_views | catalog_tables

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # On a machine in New York, connecting as the README says (nothing about time zones).
    proc = subprocess.run(
        [str(bi_python), str(PROBE), str(catalog), "--queries", json.dumps(TIME_QUERIES)],
        cwd=elsewhere,
        env=cli_env(TZ=NON_UTC),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got: dict[str, Any] = json.loads(proc.stdout)

    pins = _pins()
    assert got["versions"] == {k: pins[k] for k in ("sqlalchemy", "duckdb_engine", "duckdb", "pandas")}

    # Every object of the catalog is listed; the catalog holds views only, so BI tools find them
    # among views (get_table_names() is empty).
    assert set(got["table_names"]) == catalog_tables
    assert set(got["view_names"]) == catalog_views
    assert set(got["reflected"]) == catalog_views | catalog_tables

    for table in schema.TABLES:
        cols = got["columns"][table.name]
        assert [c["name"] for c in cols] == table.column_names, table.name
        for col, reflected in zip(table.columns, cols, strict=True):
            assert reflected["python_type"] == REFLECTED_PYTHON_TYPES[col.type], (table.name, col.name, reflected)
            assert reflected["comment"] == col.description, (table.name, col.name)
        assert got["comments"][table.name].startswith(table.description)
    for view in schema.VIEWS:
        cols = got["columns"][view.name]
        assert [c["name"] for c in cols] == view_columns[view.name], view.name
        assert all(c["python_type"] is not None or c["name"] == "topics" for c in cols), cols
        assert got["comments"][view.name].startswith(view.description)

    # The join through pandas.read_sql matches the article counts the pipeline stored in providers
    # (read here straight from Parquet, independently of DuckDB).
    providers = ds.dataset(sample / "current" / "providers").to_table().to_pylist()
    expected = {p["name"]: p["article_count"] for p in providers if p["article_count"] > 0}
    assert len(expected) == len([p for p in providers if p["article_count"] > 0])  # names are unique here
    result = got["read_sql"]
    assert result["columns"] == ["provider", "articles"]
    assert result["dtypes"]["articles"] == "int64"
    assert {r["provider"]: r["articles"] for r in result["rows"]} == expected
    assert result["rows"][0] == {"provider": "Reuters", "articles": 3}

    assert got["article_facts_rows"] == 15
    assert got["article_facts_dtypes"]["published_at"] == "datetime64[us]"  # UTC wall time, no zone attached

    # Time grains, day filters and date parts: the UTC answers of `pipeline query`.
    time_rows = _time_rows({name: q["rows"] for name, q in got["queries"].items()})
    _assert_known_time_answers(time_rows)
    assert time_rows == _pipeline_time_rows(sample, elsewhere, "UTC")
    assert got["write_refused"] and "read-only" in got["write_refused"]
    assert _sha256(catalog) == before


DUCKDB_READER = r"""
import datetime, json, sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
text = lambda v: str(v) if isinstance(v, datetime.date) else v
out = {name: [[text(v) for v in row] for row in con.execute(sql).fetchall()] for name, sql in json.loads(sys.argv[2]).items()}
types = con.execute("SELECT DISTINCT data_type FROM duckdb_columns() WHERE NOT internal AND data_type LIKE 'TIMESTAMP%'").fetchall()
print(json.dumps({"rows": out, "zone": con.execute("SELECT current_setting('TimeZone')").fetchone()[0],
                  "types": sorted(t[0] for t in types)}))
"""


def test_readers_in_a_non_utc_time_zone_see_utc_days(sample: Path, tmp_path: Path) -> None:
    """The DuckDB client and `pipeline query` on a machine in New York answer as in UTC (issue 20)."""
    expected = _pipeline_time_rows(sample, tmp_path, "UTC")
    _assert_known_time_answers(expected)
    assert _pipeline_time_rows(sample, tmp_path, NON_UTC) == expected

    proc = subprocess.run(
        [sys.executable, "-c", DUCKDB_READER, str(sample / "catalog.duckdb"), json.dumps(TIME_QUERIES)],
        cwd=tmp_path,
        env=cli_env(TZ=NON_UTC),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["zone"] == NON_UTC  # DuckDB did take the machine's zone for the session...
    assert got["types"] == ["TIMESTAMP"]  # ... and the views hand out UTC wall time, so it does not matter
    assert _time_rows(got["rows"]) == expected


# --- 2. Parquet readers -----------------------------------------------------------------------


def _sorted_rows(rows: list[dict[str, Any]], key: tuple[str, ...]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: tuple(r[k] for k in key))


@pytest.mark.parametrize("table", schema.TABLES, ids=lambda t: t.name)
def test_parquet_readers_see_the_same_tables(sample: Path, table: schema.Table) -> None:
    folder = sample / "current" / table.name
    glob = str(folder / "*.parquet")
    expected_rows = _catalog_counts(sample, [table.name])[table.name]

    # pyarrow: the table folder as a dataset; month file names are not hive-style, no column added.
    dataset = ds.dataset(folder, format="parquet")
    assert dataset.schema.names == table.column_names
    assert {f.name: f.type for f in dataset.schema} == {c.name: schema.ARROW_TYPES[c.type] for c in table.columns}
    assert dataset.count_rows() == expected_rows
    arrow_rows = dataset.to_table().to_pylist()

    # DuckDB: read_parquet over the glob, with its default (auto-detected) hive partitioning.
    con = duckdb.connect()
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{glob}')").fetchall()
        assert [(r[0], r[1]) for r in described] == [
            (c.name, schema.PARQUET_DUCKDB_TYPES[c.type]) for c in table.columns
        ]
        assert con.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone() == (expected_rows,)
        cursor = con.execute(f"SELECT * FROM read_parquet('{glob}')")
        names = [d[0] for d in cursor.description]
        duck_rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        con.close()

    # polars: scan_parquet over the glob.
    lazy = pl.scan_parquet(glob)
    polars_schema = lazy.collect_schema()
    assert polars_schema.names() == table.column_names
    assert dict(polars_schema) == {c.name: POLARS_TYPES[c.type] for c in table.columns}
    frame = lazy.collect()
    assert frame.height == expected_rows
    polars_rows = frame.to_dicts()

    # The same values in all three (timestamps compare as instants, lists as lists).
    key = table.key
    assert _sorted_rows(arrow_rows, key) == _sorted_rows(duck_rows, key) == _sorted_rows(polars_rows, key)
    for rows in (arrow_rows, duck_rows, polars_rows):
        for row in rows:
            for col in table.columns:
                value = row[col.name]
                if value is None:
                    continue
                if col.type == "bool":
                    assert isinstance(value, bool)
                elif col.type == "list<string>":
                    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
                elif col.type == "timestamp":
                    assert value.tzinfo is not None and value.utcoffset() is not None  # an instant, not wall time


def test_key_value_folder_above_the_warehouse(sample: Path, tmp_path: Path) -> None:
    """A `key=value` folder above the warehouse (e.g. /data/env=prod/warehouse) is not a partition.

    pyarrow and polars ignore it; DuckDB's read_parquet auto-detects hive partitioning and would add
    an `env` column, so direct DuckDB reads should pass hive_partitioning = false, as the catalog's
    views do.
    """
    link = tmp_path / "env=prod"
    link.symlink_to(sample.parent, target_is_directory=True)
    table = schema.table("articles")
    folder = link / sample.name / "current" / table.name
    glob = str(folder / "*.parquet")

    assert ds.dataset(folder, format="parquet").schema.names == table.column_names
    assert pl.scan_parquet(glob).collect_schema().names() == table.column_names
    con = duckdb.connect()
    try:
        explicit = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning = false)").fetchall()
        assert [r[0] for r in explicit] == table.column_names
        auto = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{glob}')").fetchall()
        assert [r[0] for r in auto] == [*table.column_names, "env"], "DuckDB's hive auto-detection changed"
    finally:
        con.close()
    catalog = open_catalog(link / sample.name)
    try:
        assert [r[0] for r in catalog.execute("DESCRIBE articles").fetchall()] == table.column_names
    finally:
        catalog.close()


# --- 3. moved warehouse -----------------------------------------------------------------------

READER = r"""
import json, sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
counts = {n: con.execute(f'select count(*) from "{n}"').fetchone()[0] for n in sys.argv[2].split(",")}
path = con.execute("select warehouse from pipeline_snapshot").fetchone()[0]
print(json.dumps({"counts": counts, "warehouse": path}))
"""


def test_moved_warehouse_works_after_pipeline_catalog(load, warehouse: Path, tmp_path: Path) -> None:
    load()
    names = TABLE_NAMES + VIEW_NAMES
    expected = _catalog_counts(warehouse, names)

    new_home = tmp_path / "moved"
    new_home.mkdir()
    moved = new_home / "wh-new"
    shutil.move(warehouse, moved)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def read(catalog: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", READER, str(catalog), ",".join(names)],
            cwd=elsewhere,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    # The old catalog names the old absolute paths: it fails until rebuilt...
    stale = read(moved / "catalog.duckdb")
    assert stale.returncode != 0
    assert "No files found" in stale.stderr or "IO Error" in stale.stderr, stale.stderr
    # ... while `pipeline query` needs no rebuild (it builds its views from `current`).
    q = run_cli(
        "query", "select count(*) as n from articles", "--warehouse", str(moved), "--format", "json", cwd=elsewhere
    )
    assert json.loads(q.stdout) == [{"n": expected["articles"]}]

    # A relative --warehouse, from the folder that holds it.
    rebuilt = run_cli("catalog", "--warehouse", "wh-new", cwd=new_home)
    assert "rebuilt" in rebuilt.stdout

    fresh = read(moved / "catalog.duckdb")
    assert fresh.returncode == 0, fresh.stderr
    got = json.loads(fresh.stdout)
    assert got["counts"] == expected
    assert got["warehouse"] == str(moved)  # the views name files of the moved folder


# --- 4. example queries for the README --------------------------------------------------------


def _example_queries() -> list[tuple[str, str]]:
    parts = re.split(r"^-- name: (.+)$", EXAMPLES.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return [(title.strip(), sql.strip()) for title, sql in zip(parts[1::2], parts[2::2], strict=True)]


EXAMPLE_QUERIES = _example_queries()


def test_example_queries_file_lists_the_documented_questions() -> None:
    assert [title for title, _ in EXAMPLE_QUERIES] == [
        "Articles per provider per month",
        "Top topics",
        "Topic co-occurrence",
        "Most related articles",
        "Image size distribution",
    ]


def _expected_results() -> dict[str, dict[str, Any]]:
    """The reviewed results of the example queries on the sample warehouse (never rewritten by a test)."""
    if not EXPECTED_RESULTS.is_file():
        pytest.fail(f"{EXPECTED_RESULTS.relative_to(REPO)} is missing: the example queries have nothing to match")
    return json.loads(EXPECTED_RESULTS.read_text(encoding="utf-8"))


def _plain(value: Any) -> Any:
    """A DuckDB value as `pipeline query --format json` writes it (an instant, if any, shown in UTC)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return str(value.astimezone(UTC) if value.tzinfo is not None else value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)  # date, Decimal, UUID, ...: their text form, as the CLI's json.dumps(default=str)


def _in_utc(text: str | None) -> str | None:
    """A TIMESTAMP WITH TIME ZONE printed by `pipeline query` (in the machine's zone), shown in UTC.

    The views' own timestamps are UTC wall time already; only a query's own instants need this.
    """
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    return str(moment.astimezone(UTC) if moment.tzinfo is not None else moment)


def test_every_example_query_has_an_expected_result() -> None:
    expected = _expected_results()
    assert list(expected) == [title for title, _ in EXAMPLE_QUERIES], (
        f"{EXPECTED_RESULTS.relative_to(REPO)} and {EXAMPLES.relative_to(REPO)} list different queries"
    )
    for title, result in expected.items():
        assert set(result) == {"columns", "rows"}, title
        assert all(len(row) == len(result["columns"]) for row in result["rows"]), title


def test_expected_example_results_add_up(sample: Path) -> None:
    """The reviewed rows agree with the sample warehouse's table sizes (15 shipped seeds)."""
    expected = _expected_results()
    counts = _catalog_counts(sample, ["articles", "article_topics", "article_images", "related_article_images"])
    shipped = [p for p in SEEDS.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert counts["articles"] == len(shipped) == 15

    per_month = expected["Articles per provider per month"]["rows"]
    assert sum(articles for _, _, articles in per_month) == counts["articles"]
    images = expected["Image size distribution"]["rows"]
    assert sum(r[1] for r in images) == counts["article_images"]
    assert sum(r[2] for r in images) == counts["related_article_images"]
    assert all(r[1] + r[2] == r[3] for r in images)
    topics = expected["Top topics"]["rows"]
    assert sum(n for _, n in topics) <= counts["article_topics"]
    assert all(a < b for a, b, _ in expected["Topic co-occurrence"]["rows"])
    related = expected["Most related articles"]["rows"]
    assert all(listed_by <= times for _, _, times, listed_by in related)


@pytest.mark.parametrize(("title", "sql"), EXAMPLE_QUERIES, ids=[t for t, _ in EXAMPLE_QUERIES])
def test_example_query_result(sample: Path, tmp_path: Path, title: str, sql: str) -> None:
    expected = _expected_results().get(title)
    if expected is None:
        pytest.fail(
            f"no expected result for {title!r} in {EXPECTED_RESULTS.relative_to(REPO)}: run the query on a "
            "warehouse built from seeds/, review the rows and add them"
        )
    columns, rows = expected["columns"], expected["rows"]

    # On the catalog file (DuckDB CLI, BI tools' SQL editors).
    con = open_catalog(sample)
    try:
        cursor = con.execute(sql)
        assert [d[0] for d in cursor.description] == columns, title
        instants = {d[0] for d in cursor.description if str(d[1]) == "TIMESTAMP WITH TIME ZONE"}
        catalog_rows = [[_plain(v) for v in row] for row in cursor.fetchall()]
    finally:
        con.close()
    assert catalog_rows == rows, f"{title}: catalog result differs"

    # Through `pipeline query`: the same rows.
    proc = run_cli("query", sql, "--warehouse", str(sample), "--format", "json", cwd=tmp_path)
    got = json.loads(proc.stdout)
    assert [list(r) for r in got] == [columns] * len(got), f"{title}: columns {list(got[0]) if got else None}"
    cli_rows = [[_in_utc(r[c]) if c in instants else r[c] for c in columns] for r in got]
    assert cli_rows == rows, f"{title}: `pipeline query` result differs"
