"""A real Apache Superset on the catalog, on a machine in New York, connected as the README says.

Superset 6.1 runs from its own venv, .venv-superset, built by this test from
tests/bi/superset/requirements.txt (the resolved stack of `pip install "apache-superset[duckdb]==6.1.0"`
plus the three packages its `db upgrade` needs; ~10 min and ~875 MB when pip has nothing cached) and
reused while that file, the Python version and the base interpreter stay the same. Superset serves
on 127.0.0.1 with a SQLite metadata database in a temporary folder, its process under
TZ=America/New_York, and is driven through its REST API (tests/bi/superset/local.py): the database
connection (the README's URI, read-only, nothing about time zones), datasets on `articles` and
`article_facts`, every example query of docs/example-queries.sql in SQL Lab, and chart data requests
at the month grain, with and without a day-range filter. Every result is compared with `pipeline
query` on the same warehouse.

Opt-in: set SEED_PIPELINE_TEST_SUPERSET=1 (not a PIPELINE_* name: the CLI warns about unknown ones).
Measured on this 2-core machine: ~80 s with the venv cached, ~50 s of it Superset's own db upgrade and
init; see README, "For analysts and BI tools".
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness.envs import ensure_venv

from .conftest import REPO, cli_env, run_cli
from .test_bi_clients import EXAMPLE_QUERIES, NON_UTC, TIME_QUERIES, _assert_known_time_answers, _time_rows

SUPERSET_DIR = REPO / "tests" / "bi" / "superset"
SUPERSET_VENV = REPO / ".venv-superset"
SWITCH = "SEED_PIPELINE_TEST_SUPERSET"

pytestmark = pytest.mark.skipif(
    os.environ.get(SWITCH) != "1",
    reason=f"a real Superset (own venv, ~10 min to build uncached, ~1-2 min to run): set {SWITCH}=1",
)


@pytest.fixture(scope="module")
def superset(tmp_path_factory: pytest.TempPathFactory) -> Any:
    spec = importlib.util.spec_from_file_location("superset_local", SUPERSET_DIR / "local.py")
    assert spec is not None and spec.loader is not None
    local = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(local)
    ensure_venv(SUPERSET_VENV, SUPERSET_DIR / "requirements.txt")
    server = local.LocalSuperset(SUPERSET_VENV, tmp_path_factory.mktemp("superset-home"), tz=NON_UTC)
    with server:
        yield server, local
    print(f"\nSuperset set-up timings (s, shown with -s): {server.timings}")


def _pipeline(warehouse: Path, sql: str, cwd: Path) -> list[dict[str, Any]]:
    proc = run_cli("query", sql, "--warehouse", str(warehouse), "--format", "json", cwd=cwd, env=cli_env(TZ="UTC"))
    return list(json.loads(proc.stdout))


def _value(value: Any) -> Any:
    """SQL Lab's JSON and `pipeline query --format json` side by side: date-times as 'YYYY-MM-DD HH:MM:SS'."""
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?", value):
        return value.replace("T", " ")
    return value


def _rows(records: list[dict[str, Any]]) -> list[list[Any]]:
    return [[_value(v) for v in r.values()] for r in records]


def _top_level_limit(sql: str) -> int | None:
    match = re.search(r"\bLIMIT\s+(\d+)\s*;?\s*$", sql, flags=re.IGNORECASE)
    return int(match.group(1)) if match else None


@pytest.mark.timeout(2400)  # the first run builds .venv-superset
def test_superset_on_the_catalog_in_new_york(superset: Any, sample: Path, tmp_path: Path) -> None:
    server, local = superset
    catalog = sample / "catalog.duckdb"

    # The connection, exactly as the README gives it.
    database = server.add_database("seed-pipeline", catalog)
    detail = server.call("GET", f"/api/v1/database/{database}/connection")["result"]
    assert detail["backend"] == "duckdb"
    assert detail["sqlalchemy_uri"] == f"duckdb:///{catalog}"
    assert json.loads(detail["extra"])["engine_params"] == {"connect_args": {"read_only": True}}
    assert local.SCHEMA in server.schemas(database)
    tables = server.tables(database)
    assert {"articles", "article_facts", "related_resolved", "providers"} <= set(tables)

    # Datasets: published_at is a time column (is_dttm) of a zone-less TIMESTAMP; topics (a list) is unknown.
    articles = server.add_dataset(database, "articles")
    facts = server.add_dataset(database, "article_facts")
    for dataset in (articles, facts):
        columns = {c["column_name"]: c for c in server.dataset(dataset)["columns"]}
        assert columns["published_at"]["is_dttm"] is True
        assert columns["published_at"]["type"] == "TIMESTAMP WITHOUT TIME ZONE"
    facts_columns = {c["column_name"]: c for c in server.dataset(facts)["columns"]}
    assert facts_columns["topics"]["type"] == "UNKNOWN"
    assert facts_columns["published_date"]["is_dttm"] is True

    # SQL Lab: every example query of the README. Superset 6.1 replaces a query's own top-level LIMIT
    # with its row limit (LIMIT 10 runs as LIMIT 100001), so a LIMIT query returns more rows there; its
    # first rows are the answer, and the same query wrapped in SELECT * FROM (...) returns exactly it.
    for title, sql in EXAMPLE_QUERIES:
        expected = _rows(_pipeline(sample, sql, tmp_path))
        assert expected, title
        reply = server.sql_lab(database, sql)
        assert reply["status"] == "success", (title, reply)
        got = _rows(reply["data"])
        limit = _top_level_limit(sql)
        if limit is None:
            assert got == expected, title
        else:
            assert got[: len(expected)] == expected, title
            wrapped = server.sql_lab(database, f"SELECT * FROM ({sql.rstrip().rstrip(';')})")
            assert _rows(wrapped["data"]) == expected, title

    # The time questions of tests/test_bi_clients.py, in SQL Lab under New York's zone.
    lab = {name: server.sql_lab(database, sql)["data"] for name, sql in TIME_QUERIES.items()}
    lab_rows = _time_rows({name: [list(r.values()) for r in rows] for name, rows in lab.items()})
    _assert_known_time_answers(lab_rows)
    pipeline_rows = _time_rows(
        {n: [list(r.values()) for r in _pipeline(sample, s, tmp_path)] for n, s in TIME_QUERIES.items()}
    )
    assert lab_rows == pipeline_rows

    # A chart's data request: articles per month (the month time grain), all time and one UTC day.
    def chart_months(time_range: str) -> list[tuple[str | None, int]]:
        result = server.chart_data(local.month_query_context(articles, time_range))["result"][0]
        assert result["status"] == "success", result
        out = []
        for row in result["data"]:
            ms = row["published_at"]
            month = None if ms is None else str(datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None))
            out.append((month, row["count"]))
        return sorted(out, key=lambda r: (r[0] is None, r[0] or ""))

    per_month_sql = (
        "SELECT date_trunc('month', published_at) AS month, count(*) AS n FROM articles {where} "
        "GROUP BY ALL ORDER BY month NULLS LAST"
    )
    expected_months = [(r["month"], r["n"]) for r in _pipeline(sample, per_month_sql.format(where=""), tmp_path)]
    assert chart_months("No filter") == expected_months
    one_day = "WHERE published_at >= '2024-02-24' AND published_at < '2024-02-25'"
    expected_day = [(r["month"], r["n"]) for r in _pipeline(sample, per_month_sql.format(where=one_day), tmp_path)]
    assert expected_day == [("2024-02-01 00:00:00", 1)]  # 2024-02-24T00:05Z (23 February in New York)
    assert chart_months("2024-02-24 : 2024-02-25") == expected_day
