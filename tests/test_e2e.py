"""End to end through the CLI, as a user runs it: Prefect flow, then SQL from another directory and process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from pipeline import faults

from .conftest import cli_env, export_tables, run_cli

EXPECTED_ROWS = {
    "articles": 15,
    "article_topics": 53,
    "article_images": 17,
    "related_articles": 18,
    "related_article_images": 10,
    "providers": 15,
    "rejects": 0,
}

READER = r"""
import json, sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
q = lambda sql: con.execute(sql).fetchall()
out = {
    "counts": {t: q(f"select count(*) from {t}")[0][0] for t in sys.argv[2].split(",")},
    "dup_article_ids": q("select count(*) - count(distinct article_id) from articles")[0][0],
    "related_join": q("select count(*) from related_articles r join articles a on a.article_id = r.related_article_id")[0][0],
    "related_to_real_seed": q(
        "select count(*) from related_articles r join articles a on a.article_id = r.related_article_id "
        "where a.source_path = '000_0d86a7039b408f6d.txt'")[0][0],
    "published_type": q("select data_type from duckdb_columns() where table_name='articles' and column_name='published_at'")[0][0],
    "real_seed_published": str(q("select published_at from articles where source_path = '000_0d86a7039b408f6d.txt'")[0][0]),
    "orphans": q("select count(*) from article_images i anti join articles a using (article_id)")[0][0],
    "providers_missing": q("select count(*) from articles a where provider_id not in (select provider_id from providers)")[0][0],
    "reuters_names": q("select names from providers where domain = 'reuters.com'")[0][0],
}
print(json.dumps(out))
"""


def test_run_with_prefect_then_query_from_elsewhere(seeds: Path, warehouse: Path, tmp_path: Path) -> None:
    proc = run_cli("run", "--seeds", str(seeds), "--warehouse", str(warehouse), timeout=240)
    assert "15 files seen: 15 loaded, 0 rejected, 0 duplicates" in proc.stdout
    assert "Prefect overhead" in proc.stdout
    for noise in ("Traceback", "ERROR", "CancelledError", "telemetry"):
        assert noise not in proc.stderr, proc.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    reader = subprocess.run(
        [sys.executable, "-c", READER, str(warehouse / "catalog.duckdb"), ",".join(EXPECTED_ROWS)],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    got = json.loads(reader.stdout)
    assert got["counts"] == EXPECTED_ROWS
    assert got["dup_article_ids"] == 0
    assert got["related_join"] == 8  # related entries that point at another shipped seed
    assert got["related_to_real_seed"] == 2
    assert got["published_type"] == "TIMESTAMP"  # UTC wall time in the catalog's views (issue 20)
    assert got["real_seed_published"] == "2023-10-08 16:23:00"
    assert got["orphans"] == 0 and got["providers_missing"] == 0
    assert got["reuters_names"] == ["Reuters"]

    q = run_cli(
        "query", "select count(*) as n from articles", "--warehouse", str(warehouse), "--format", "json", cwd=elsewhere
    )
    assert json.loads(q.stdout) == [{"n": 15}]


def test_rerun_on_unchanged_input_gives_identical_tables(load, warehouse: Path) -> None:
    load()
    first = export_tables(warehouse)
    proc = load("--format", "json")
    summary = json.loads(proc.stdout)
    assert summary["files"]["new"] == summary["files"]["changed"] == summary["files"]["deleted"] == 0
    assert export_tables(warehouse) == first


def test_catalog_survives_a_move_after_rebuild(load, warehouse: Path, tmp_path: Path) -> None:
    load()
    moved = tmp_path / "moved-warehouse"
    warehouse.rename(moved)
    q = run_cli("query", "select count(*) as n from articles", "--warehouse", str(moved), "--format", "csv")
    assert q.stdout.splitlines() == ["n", "15"]  # query never depends on the catalog file
    run_cli("catalog", "--warehouse", str(moved))
    assert export_tables(moved)["articles"]


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    proc = run_cli("run", "--seeds", str(tmp_path / "nope"), "--orchestrator", "none", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "seeds folder not found" in proc.stderr
    proc = run_cli("query", "select 1", "--warehouse", str(tmp_path / "empty"), check=False)
    assert proc.returncode == 5 and "Traceback" not in proc.stderr


def test_duckdb_out_of_memory_names_the_setting(seeds: Path, tmp_path: Path) -> None:
    """DuckDB's own advice (SET memory_limit) is not something a user can do: name the setting."""
    env = cli_env(PIPELINE_MEMORY_LIMIT="1MB")
    wh = tmp_path / "wh"
    proc = run_cli("run", "--seeds", str(seeds), "--warehouse", str(wh), "--orchestrator", "none", env=env, check=False)
    assert proc.returncode == 1
    error = [line for line in proc.stderr.splitlines() if line.startswith("pipeline: error:")]
    assert len(error) == 1 and "PIPELINE_MEMORY_LIMIT" in error[0] and "Traceback" not in proc.stderr
    assert not (wh / "current").exists()  # nothing published


def test_query_refuses_writes(sample: Path) -> None:
    """On the session's shared sample warehouse: `query` only reads (the catalog is opened read-only)."""
    warehouse = sample
    for sql in (
        "drop view articles",
        "create table x as select 1",
        "copy articles to '/tmp/x.csv'",
        "select 1; delete from articles",
        "attach '/tmp/x.db'",
    ):
        proc = run_cli("query", sql, "--warehouse", str(warehouse), check=False)
        assert proc.returncode == 4, sql
        assert "read-only" in proc.stderr and proc.stderr.count("\n") == 1


def test_query_formats(sample: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    warehouse = sample  # read only; the Parquet output goes to tmp_path
    out = tmp_path / "topics.parquet"
    run_cli(
        "query",
        "select topic, count(*) n from article_topics group by 1",
        "--warehouse",
        str(warehouse),
        "--format",
        "parquet",
        "--output",
        str(out),
    )
    assert pq.read_table(out).num_rows > 0
    tables = run_cli("query", "--tables", "--warehouse", str(warehouse), "--format", "json")
    listed = {r["table"]: r["rows"] for r in json.loads(tables.stdout)}
    assert listed["articles"] == 15 and listed["rejects"] == 0


def test_status_reports_health(sample: Path) -> None:
    warehouse = sample  # `status` only reads
    proc = run_cli("status", "--warehouse", str(warehouse), "--format", "json")
    info = json.loads(proc.stdout)
    assert info["healthy"] is True and info["rows"]["articles"] == 15
    stale = run_cli("status", "--warehouse", str(warehouse), "--max-age", "0s", check=False)
    assert stale.returncode == 1 and "UNHEALTHY" in stale.stdout


def test_failed_run_makes_status_unhealthy(load, seeds: Path, warehouse: Path) -> None:
    """A failing stage: one line naming the stage, the run and what the next run does (as dlt's
    PipelineStepFailed), the cause's own exit code, and the same words in what `status` reports."""
    load()
    env = cli_env(**{faults.FAIL_AT: "build"})
    proc = load(check=False, env=env)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    found = re.fullmatch(
        r"pipeline: error: stage build of run (\S+) failed, nothing was published \(the next run retries it\): "
        r"injected failure at stage build \(PIPELINE_FAULT_FAIL_AT\)\n",
        proc.stderr,
    )
    assert found, proc.stderr
    info = json.loads(run_cli("status", "--warehouse", str(warehouse), "--format", "json", check=False).stdout)
    assert info["healthy"] is False and "failed" in info["problem"]
    assert info["last_failure"]["run_id"] == found.group(1)
    assert f"stage build of run {found.group(1)} failed" in info["last_failure"]["error"]
    assert info["last_failure"]["stage"] == "build"  # a field of the record, not only words in the message


def test_a_run_started_beside_another_pipeline_package_imports_its_own(seeds: Path, tmp_path: Path) -> None:
    """The parser processes import the installed package, never a `pipeline/` that happens to sit in the
    folder the run was started in (Python 3.11's fork server puts its working folder first on its path)."""
    project = tmp_path / "project"
    (project / "pipeline").mkdir(parents=True)
    (project / "pipeline" / "__init__.py").write_text('raise SystemExit("the wrong pipeline package was imported")\n')
    command = [str(Path(sys.executable).with_name("pipeline")), "run", "--seeds", str(seeds)]
    command += ["--warehouse", str(tmp_path / "warehouse"), "--orchestrator", "none", "--format", "json", "--quiet"]
    proc = subprocess.run(command, cwd=project, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    files = json.loads(proc.stdout)["files"]
    assert files["loaded"] == files["seen"] == sum(1 for p in seeds.rglob("*") if p.is_file()), files
