"""Shared fixtures: a copy of the shipped seeds, CLI runners, and table exports for exact comparisons."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

REPO = Path(__file__).resolve().parent.parent
SEEDS = REPO / "seeds"
DOCUMENT_TABLES = ("articles", "article_topics", "article_images", "related_articles", "related_article_images")
CONTENT_TABLES = (*DOCUMENT_TABLES, "providers", "rejects", "source_files", "unknown_keys")


# Runs without PREFECT_API_URL start (or reuse) the local Prefect server: the session keeps it here
# and stops it at the end (see `local_prefect_server`).
SERVER_HOME = Path(tempfile.mkdtemp(prefix="pipeline-test-server-"))


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env["PIPELINE_SERVER_HOME"] = str(SERVER_HOME)
    env.update(extra)
    return env


@pytest.fixture(scope="session", autouse=True)
def local_prefect_server() -> Iterator[Path]:
    """Stop the local Prefect server that CLI runs may have started, and check nothing of it is left."""
    from pipeline.orchestration import server

    yield SERVER_HOME
    stopped = server.stop(SERVER_HOME)
    if stopped is not None:
        import psutil

        assert not psutil.pid_exists(stopped.pid) or psutil.Process(stopped.pid).status() == psutil.STATUS_ZOMBIE
    shutil.rmtree(SERVER_HOME, ignore_errors=True)


def run_cli(
    *args: str,
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run `pipeline ARGS` in a fresh process, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=cwd or REPO,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    """A private copy of the shipped seeds folder."""
    dst = tmp_path / "seeds"
    shutil.copytree(SEEDS, dst)
    return dst


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    return tmp_path / "warehouse"


def run_args(seeds: Path, warehouse: Path, *extra: str) -> list[str]:
    """argv of `pipeline run` without Prefect (for Popen); Prefect runs have their own tests."""
    return [sys.executable, "-m", "pipeline.cli", "run", "--seeds", str(seeds), "--warehouse", str(warehouse),
            "--orchestrator", "none", "--quiet", *extra]  # fmt: skip


def run_pipeline(seeds: Path, warehouse: Path, *extra: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`pipeline run` without Prefect, through the CLI (keyword arguments as for run_cli)."""
    return run_cli(*run_args(seeds, warehouse, *extra)[3:], **kwargs)


@pytest.fixture
def load(seeds: Path, warehouse: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`pipeline run` without Prefect on the fixture folders."""

    def _load(*extra: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run_pipeline(seeds, warehouse, *extra, check=check, env=env)

    return _load


def open_catalog(warehouse: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(warehouse / "catalog.duckdb"), read_only=True)


def catalog_rows(warehouse: Path, table: str, clauses: str = "") -> list[dict[str, Any]]:
    """The rows of one view of the catalog (catalog.duckdb, as a BI client sees them), as dicts.

    ``clauses`` follows ``SELECT * FROM "table"`` (a WHERE and/or ORDER BY). ``table_rows`` reads the
    newest snapshot instead, without the catalog.
    """
    con = open_catalog(warehouse)
    try:
        cur = con.execute(f'SELECT * FROM "{table}" {clauses}')
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


def export_tables(warehouse: Path, tables: tuple[str, ...] = CONTENT_TABLES) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted: equal exports mean identical table contents."""
    con = open_catalog(warehouse)
    try:
        out = {}
        for t in tables:
            rows = con.execute(f'SELECT * FROM "{t}"').fetchall()
            out[t] = sorted(rows, key=repr)
        return out
    finally:
        con.close()


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse built once from the shipped seeds, for tests that only read it (BI clients, Superset)."""
    root = tmp_path_factory.mktemp("sample")
    seeds = root / "seeds"
    shutil.copytree(SEEDS, seeds)
    warehouse = root / "warehouse"
    run_cli("run", "--seeds", str(seeds), "--warehouse", str(warehouse), "--orchestrator", "none", "--quiet")
    return warehouse


def table_rows(warehouse: Path | str, table: str, order_by: str = "") -> list[dict[str, Any]]:
    """The rows of one table of the newest snapshot (a local folder or an s3:// URL), as dicts."""
    from pipeline.storage.location import Location
    from pipeline.warehouse.query import connect

    con = connect(Location.parse(str(warehouse)))
    try:
        cur = con.execute(f'SELECT * FROM "{table}"' + (f" ORDER BY {order_by}" if order_by else ""))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def load_runs(warehouse: Path | str) -> list[dict[str, Any]]:
    """The warehouse's load_runs rows, oldest first."""
    return table_rows(warehouse, "load_runs", order_by="started_at")


# --- servers, started once per session ------------------------------------------------------------------


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[Any]:
    """A real `prefect server start` on loopback, shared by every test that needs the Prefect API."""
    from harness.prefect_server import PrefectServer, group_members

    srv = PrefectServer()
    srv.start()
    assert srv.proc is not None
    pgid = srv.proc.pid
    yield srv
    srv.stop()
    assert not group_members(pgid), "prefect server left processes behind"


@pytest.fixture(scope="session")
def s3() -> Iterator[Any]:
    """A real S3-compatible server (moto) on loopback; its endpoint and test keys are set for this process too."""
    from harness.s3_server import MotoServer

    with MotoServer().serving() as srv:
        yield srv
