"""Seeds and warehouse on object storage (a real S3 server, moto, on loopback), fanned out on Dask.

The oracle is always a local load of the same files: an S3 warehouse must hold the same
tables, row for row. Every run is the real CLI in its own process; the S3 server's access
log shows which objects a run fetched.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import duckdb
import pytest

from harness.envs import BI_S3_REQUIREMENTS, BI_S3_VENV, ensure_venv
from harness.s3_server import MotoServer, put
from pipeline import faults, schema
from pipeline.errors import WarehouseLocked
from pipeline.storage.location import Location
from pipeline.warehouse import commits
from pipeline.warehouse.query import connect

from .conftest import CONTENT_TABLES, REPO, SEEDS, cli_env, load_runs, run_cli
from .test_incremental import ECB, FED, SCOTLAND, new_doc, set_key

pytestmark = pytest.mark.server

# Columns that legitimately differ between a local and an S3 load of the same bytes.
STORAGE_COLUMNS = {
    "articles": ("run_id",),
    "rejects": ("run_id",),
    "source_files": ("run_id", "mtime_ns", "etag"),
    "unknown_keys": ("first_seen_run_id",),
}
CRASHER = "crash-me"  # files whose path holds this kill the parser process (faults.CRASH_ON)


def export(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of the newest snapshot at ``url`` (local or s3://), storage columns dropped, sorted."""
    con = connect(Location.parse(url))
    try:
        out = {}
        for table in CONTENT_TABLES:
            names = schema.table(table).column_names
            keep = [n for n in names if n not in STORAGE_COLUMNS.get(table, ())]
            rows = con.execute(f"SELECT {', '.join(chr(34) + n + chr(34) for n in keep)} FROM {table}").fetchall()
            out[table] = sorted(rows, key=repr)
        return out
    finally:
        con.close()


def rows(export_: dict[str, list[tuple[Any, ...]]], table: str) -> list[dict[str, Any]]:
    names = [n for n in schema.table(table).column_names if n not in STORAGE_COLUMNS.get(table, ())]
    return [dict(zip(names, r, strict=True)) for r in export_[table]]


def s3_run(
    s3: MotoServer, seeds: str, warehouse: str, *extra: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "run", "--seeds", seeds, "--warehouse", warehouse, "--quiet", *extra,
        env=env or cli_env(**s3.env()), check=check,
    )  # fmt: skip


def local_run(seeds: Path, warehouse: Path, *extra: str, env: dict[str, str] | None = None) -> None:
    run_cli(
        "run",
        "--seeds",
        str(seeds),
        "--warehouse",
        str(warehouse),
        "--orchestrator",
        "none",
        "--quiet",
        *extra,
        env=env,
    )


def corpus(folder: Path, n: int, crasher: bool = True) -> Path:
    """The shipped seeds plus ``n`` variants of one seed (own webUrl, months spread over two years),
    names with spaces and non-ASCII letters, and (``crasher``) one file that crashes the parser."""
    shutil.copytree(SEEDS, folder)
    template = (SEEDS / ECB).read_text(encoding="utf-8")
    for i in range(n):
        text = re.sub(r"(?m)^webUrl: .*$", f'webUrl: "https://example.com/news/{i:05d}"', template, count=1)
        month = 1 + i % 12
        text = re.sub(
            r"(?m)^publishedDateTime: .*$",
            f"publishedDateTime: {2023 + i % 2}-{month:02d}-0{1 + i % 9}T10:00:00Z",
            text,
            count=1,
        )
        (folder / f"bulk/{i % 7}").mkdir(parents=True, exist_ok=True)
        (folder / f"bulk/{i % 7}/{i:05d}.md").write_text(text, encoding="utf-8")
    (folder / "names with spaces").mkdir()
    (folder / "names with spaces" / "Zürich – café.md").write_text(
        new_doc("https://example.com/zurich"), encoding="utf-8"
    )
    if crasher:
        (folder / f"{CRASHER}.md").write_text(new_doc("https://example.com/crash"), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory, s3: MotoServer) -> dict[str, Any]:
    """2,000+ files locally and in a bucket, plus the local load that is the oracle."""
    root = tmp_path_factory.mktemp("big")
    folder = corpus(root / "seeds", 2000)
    bucket = s3.new_bucket()
    count = s3.upload_folder(folder, f"s3://{bucket}/seeds")
    local_run(folder, root / "local", env=cli_env(**{faults.CRASH_ON: CRASHER}))
    return {"folder": folder, "bucket": bucket, "count": count, "oracle": export(str(root / "local"))}


# --- the same tables from S3, on Dask, through a real Prefect server ------------------------------------


def test_s3_to_s3_on_dask_through_prefect_matches_a_local_load(
    big: dict[str, Any], s3: MotoServer, prefect_server: Any
) -> None:
    bucket = big["bucket"]
    wh = f"s3://{bucket}/wh-dask"
    before = _keys(s3, bucket)
    env = prefect_server.client_env(**s3.env(), **{faults.CRASH_ON: CRASHER})
    proc = s3_run(s3, f"s3://{bucket}/seeds", wh, "--runner", "dask", "--workers", "2", "--format", "json", env=env)
    for noise in ("Traceback", "ERROR"):
        assert noise not in proc.stderr, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["runner"] == "dask" and summary["files"]["seen"] == big["count"]

    assert export(wh) == big["oracle"]
    crashed = [r for r in rows(export(wh), "rejects") if r["source_path"] == f"{CRASHER}.md"]
    assert [r["reason"] for r in crashed] == ["parser_crash"]  # the worker's child died on it; the Dask worker did not

    # Written only under the warehouse prefix: the seeds were never touched.
    after = _keys(s3, bucket)
    assert {k for k in after - before if not k.startswith("wh-dask/")} == set()

    # Parse batches and merges ran as Prefect tasks (on the cluster), next to the six stages; the
    # server records them from events, all of them within a few seconds.
    from harness.prefect_server import task_name, task_runs, wait_until

    def recorded() -> list[str] | None:
        with prefect_server.client() as client:
            runs = task_runs(client, summary["flow_run_id"])
        done = [task_name(t) for t in runs if t.state is not None and t.state.is_final()]
        return done if len(done) >= summary["task_runs"] else None

    names = wait_until(recorded, 30, interval=0.3, what="the dask run's task runs")
    assert {n for n in names if n not in ("parse-batch", "merge")} == {
        "plan",
        "parse",
        "resolve",
        "build",
        "check",
        "publish",
    }
    assert names.count("parse-batch") >= 2 and names.count("merge") >= 5


def _keys(s3: MotoServer, bucket: str) -> set[str]:
    return {k[len(bucket) + 1 :] for k in s3.client().find(bucket)}


def test_dask_without_a_prefect_server_is_one_line(s3: MotoServer, tmp_path: Path) -> None:
    proc = run_cli(
        "run", "--seeds", str(SEEDS), "--warehouse", str(tmp_path / "w"), "--runner", "dask",
        env=cli_env(PREFECT_API_URL="", PREFECT_HOME=str(tmp_path / "home"), PIPELINE_LOCAL_SERVER="0"), check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "needs a Prefect server" in proc.stderr, proc.stderr


def test_plain_dask_on_a_running_cluster_matches_too(
    s3: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--orchestrator none --runner dask --dask-address`: the same stages on an existing cluster, no Prefect."""
    import dask
    from distributed import LocalCluster

    from pipeline.engine.cluster import local_cluster_kwargs

    folder = corpus(tmp_path / "seeds", 60)
    bucket = s3.new_bucket()
    s3.upload_folder(folder, f"s3://{bucket}/seeds")
    env = cli_env(**s3.env(), **{faults.CRASH_ON: CRASHER})
    # Workers see what the README asks of a cluster's workers: the AWS variables, non-daemonic processes.
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with dask.config.set({"distributed.worker.daemon": False}), LocalCluster(**local_cluster_kwargs(2)) as cluster:
        s3_run(s3, f"s3://{bucket}/seeds", f"s3://{bucket}/wh", "--orchestrator", "none", "--runner", "dask",
               "--dask-address", cluster.scheduler_address, env=env)  # fmt: skip
        assert len(cluster.scheduler.workers) == 2  # the run used this cluster and left it running
    local_run(folder, tmp_path / "oracle", env=cli_env(**{faults.CRASH_ON: CRASHER}))
    assert export(f"s3://{bucket}/wh") == export(str(tmp_path / "oracle"))


# --- incremental runs fetch only what changed -------------------------------------------------------------


def test_rerun_fetches_only_new_and_changed_objects(s3: MotoServer, tmp_path: Path) -> None:
    folder = corpus(tmp_path / "seeds", 40, crasher=False)
    bucket = s3.new_bucket()
    s3.upload_folder(folder, f"s3://{bucket}/seeds")
    wh = f"s3://{bucket}/wh"
    s3_run(s3, f"s3://{bucket}/seeds", wh, "--orchestrator", "none")

    fs = s3.client()
    set_key(folder / ECB, "title", '"Edited On S3"')
    set_key(folder / FED, "publishedDateTime", "2024-05-20T08:00:00Z")
    (folder / "added.md").write_text(new_doc("https://example.com/added"), encoding="utf-8")
    (folder / SCOTLAND).unlink()
    for rel in (ECB, FED, "added.md"):
        put(fs, bucket, f"seeds/{rel}", (folder / rel).read_bytes())
    fs.call_s3("delete_object", Bucket=bucket, Key=f"seeds/{SCOTLAND}")
    # Same bytes uploaded again: a new last-modified time, the same ETag: nothing to fetch.
    put(fs, bucket, "seeds/003_51755eb28cfc0b0e.md", (folder / "003_51755eb28cfc0b0e.md").read_bytes())

    mark = s3.log_mark()
    s3_run(s3, f"s3://{bucket}/seeds", wh, "--orchestrator", "none")
    fetched = sorted(
        {path for method, path in s3.requests_since(mark) if method == "GET" and path.startswith(f"/{bucket}/seeds/")}
    )
    assert fetched == sorted(f"/{bucket}/seeds/{rel}" for rel in (ECB, FED, "added.md")), fetched

    run = load_runs(wh)[-1]
    assert (run["files_new"], run["files_changed"], run["files_deleted"], run["files_parsed"]) == (1, 2, 1, 3)
    local_run(folder, tmp_path / "oracle")
    assert export(wh) == export(str(tmp_path / "oracle"))


# --- keys as users have them ------------------------------------------------------------------------------


def test_odd_keys(s3: MotoServer, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    fs = s3.client()
    doc = new_doc("https://example.com/odd").encode()
    objects = {
        "seeds/ok.md": new_doc("https://example.com/ok").encode(),
        "seeds/with space/é ü.md": new_doc("https://example.com/unicode").encode(),
        "seeds/q?versionId=1.md": new_doc("https://example.com/question").encode(),
        "seeds/folder/": b"",  # a console's folder marker
        "seeds/empty.md": b"",
        "seeds/x/../escape.md": doc,
        "seeds/double//slash.md": doc,
        "seeds/./dot.md": doc,
        "seeds/.hidden/secret.md": doc,
        "seeds/notes.png": b"\x89PNG",
        "outside.md": doc,  # beside the prefix, never read
    }
    for key, data in objects.items():
        put(fs, bucket, key, data)
    wh = f"s3://{bucket}/wh"
    s3_run(s3, f"s3://{bucket}/seeds", wh, "--orchestrator", "none")
    got = export(wh)
    status = {r["source_path"]: r["status"] for r in rows(got, "source_files")}
    reasons = {r["source_path"]: r["reason"] for r in rows(got, "rejects")}
    assert status == {
        "ok.md": "loaded",
        "with space/é ü.md": "loaded",
        "q?versionId=1.md": "loaded",
        "empty.md": "rejected",
        "x/../escape.md": "rejected",
        "double//slash.md": "rejected",
        "./dot.md": "rejected",
    }
    assert reasons == {
        "empty.md": "no_frontmatter",
        "x/../escape.md": "unsafe_key",
        "double//slash.md": "unsafe_key",
        "./dot.md": "unsafe_key",
    }
    keys = {k[len(bucket) + 1 :] for k in fs.find(bucket)}
    assert {k for k in keys if not k.startswith(("seeds/", "wh/"))} == {"outside.md"}

    # validate agrees, without a warehouse
    proc = run_cli(
        "validate", "--seeds", f"s3://{bucket}/seeds", "--format", "json", env=cli_env(**s3.env()), check=False
    )
    assert proc.returncode == 1
    assert {e["path"]: e["ok"] for e in json.loads(proc.stdout)} == {p: s == "loaded" for p, s in status.items()}


def test_an_empty_or_missing_prefix_is_refused_not_read_as_deleted(s3: MotoServer) -> None:
    bucket = s3.new_bucket()
    proc = s3_run(s3, f"s3://{bucket}/typo", f"s3://{bucket}/wh", "--orchestrator", "none", check=False)
    assert proc.returncode == 2 and "holds no objects" in proc.stderr and proc.stderr.count("\n") == 1


# --- listing failures never mean deletion ------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "s3"])
def test_unlisted_folder_keeps_its_articles(where: str, s3: MotoServer, tmp_path: Path) -> None:
    folder = tmp_path / "seeds"
    shutil.copytree(SEEDS, folder)
    if where == "s3":
        bucket = s3.new_bucket()
        s3.upload_folder(folder, f"s3://{bucket}/seeds")
        seeds, wh = f"s3://{bucket}/seeds", f"s3://{bucket}/wh"
    else:
        seeds, wh = str(folder), str(tmp_path / "wh")

    def run(**fault: str) -> None:
        run_cli(
            "run",
            "--seeds",
            seeds,
            "--warehouse",
            wh,
            "--orchestrator",
            "none",
            "--quiet",
            env=cli_env(**s3.env(), **fault),
        )

    run()
    first = export(wh)
    in_2024 = {r[0] for r in first["source_files"] if r[0].startswith("2024/")}
    assert len(in_2024) == 3

    # 2024/ cannot be listed (permanently), and meanwhile a file elsewhere is deleted.
    if where == "s3":
        s3.client().call_s3("delete_object", Bucket=bucket, Key=f"seeds/{SCOTLAND}")
    else:
        (folder / SCOTLAND).unlink()
    run(**{faults.LIST_ERROR: "2024/"})
    second = export(wh)
    held = {r["article_id"] for r in rows(first, "source_files") if r["source_path"] in in_2024}
    for table in schema.DOCUMENT_TABLES:
        kept = {r for r in first[table.name] if r[0] in held}
        assert kept and kept <= set(second[table.name]), table.name  # the unlisted folder's articles, unchanged
    assert {r[0] for r in second["source_files"]} == ({r[0] for r in first["source_files"]} - {SCOTLAND}) | {"2024/"}
    (reject,) = [r for r in rows(second, "rejects") if r["source_path"] == "2024/"]
    assert reject["reason"] == "unlisted_folder" and "kept exactly as they were" in reject["message"]
    run_row = load_runs(wh)[-1]
    assert (run_row["files_unlisted"], run_row["files_deleted"]) == (3, 1)

    # A transient failure (twice, then it answers) is retried: the folder is listed, nothing is lost.
    run(**{faults.LIST_ERROR: "2024/@2"})
    third = export(wh)
    assert "2024/" not in {r[0] for r in third["source_files"]}
    assert in_2024 <= {r[0] for r in third["source_files"]}
    (gone,) = [r["article_id"] for r in rows(first, "source_files") if r["source_path"] == SCOTLAND]
    assert third["articles"] == [r for r in first["articles"] if r[0] != gone]


def test_root_listing_failure_fails_the_run_and_changes_nothing(s3: MotoServer) -> None:
    bucket = s3.new_bucket()
    s3.upload_folder(SEEDS, f"s3://{bucket}/seeds")
    wh = f"s3://{bucket}/wh"
    s3_run(s3, f"s3://{bucket}/seeds", wh, "--orchestrator", "none")
    before = export(wh)
    proc = s3_run(
        s3,
        f"s3://{bucket}/seeds",
        wh,
        "--orchestrator",
        "none",
        env=cli_env(**s3.env(), **{faults.LIST_ERROR: ""}),
        check=False,
    )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "listing" in proc.stderr
    assert export(wh) == before
    assert len(commits.versions(Location.parse(wh))) == 1


# --- the commit protocol on object storage ------------------------------------------------------------------


def test_create_only_commit_has_exactly_one_winner(s3: MotoServer) -> None:
    wh = Location.parse(f"s3://{s3.new_bucket()}/wh")
    results: list[str] = []

    def attempt(i: int) -> None:
        try:
            commits.commit(wh, f"run-{i}", 7, {"articles": []}, {})
            results.append(f"run-{i}")
        except WarehouseLocked:
            results.append("lost")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r != "lost"]
    assert len(results) == 8 and len(winners) == 1
    snap = commits.read_newest(wh)
    assert snap is not None and snap.id == winners[0] and snap.version == 7


def test_two_concurrent_runs_one_commits_nothing_lost(s3: MotoServer, tmp_path: Path) -> None:
    folder = corpus(tmp_path / "seeds", 20, crasher=False)
    bucket = s3.new_bucket()
    s3.upload_folder(folder, f"s3://{bucket}/seeds")
    wh = f"s3://{bucket}/wh"
    env = cli_env(**s3.env(), **{faults.SLEEP_HOLDING_LOCK: "3"})
    args = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "run",
        "--seeds",
        f"s3://{bucket}/seeds",
        "--warehouse",
        wh,
        "--orchestrator",
        "none",
        "--quiet",
    ]
    procs = [
        subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 75], outs
    loser = outs[[p.returncode for p in procs].index(75)]
    assert loser[1].count("\n") == 1 and "lease held by run" in loser[1]
    assert len(commits.versions(Location.parse(wh))) == 1
    local_run(folder, tmp_path / "oracle")
    assert export(wh) == export(str(tmp_path / "oracle"))


@pytest.mark.parametrize("point", ["before_commit", "after_commit"])  # every point on local disk: test_crash_safety
def test_kill_9_on_s3_keeps_the_last_snapshot_and_the_next_run_converges(
    point: str, s3: MotoServer, tmp_path: Path
) -> None:
    folder = tmp_path / "seeds"
    shutil.copytree(SEEDS, folder)
    bucket = s3.new_bucket()
    s3.upload_folder(folder, f"s3://{bucket}/seeds")
    wh = f"s3://{bucket}/wh"
    short_lease = {"PIPELINE_LEASE_SECONDS": "2"}
    s3_run(s3, f"s3://{bucket}/seeds", wh, "--orchestrator", "none", env=cli_env(**s3.env(), **short_lease))
    before = export(wh)

    set_key(folder / ECB, "title", '"Edited Before The Kill"')
    put(s3.client(), bucket, f"seeds/{ECB}", (folder / ECB).read_bytes())
    killed = s3_run(s3, f"s3://{bucket}/seeds", wh, "--orchestrator", "none",
                    env=cli_env(**s3.env(), **short_lease, **{faults.KILL_AT: point}), check=False)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    # Readers resolve the newest commit: the old snapshot, or (killed after the commit) the new one, whole.
    versions = commits.versions(Location.parse(wh))
    assert versions == ([1, 2] if point == "after_commit" else [1])
    if point != "after_commit":
        assert export(wh) == before

    # The killed run's lease is still there: the next run waits for it to expire, then converges.
    s3_run(s3, f"s3://{bucket}/seeds", wh, "--orchestrator", "none", "--wait", "30",
           env=cli_env(**s3.env(), **short_lease, PIPELINE_GC_GRACE_SECONDS="0", PIPELINE_RETENTION="1"))  # fmt: skip
    local_run(folder, tmp_path / "oracle")
    assert export(wh) == export(str(tmp_path / "oracle"))

    # Retention 1, grace 0: only the newest commit and the files it names are left (plus the catalog, the
    # tables' Delta logs, and nothing staged).
    loc = Location.parse(wh)
    newest = commits.read_newest(loc)
    assert newest is not None and commits.versions(loc) == [newest.version]
    data = {e.rel for e in loc.list_files("data") if "/_delta_log/" not in e.rel}
    assert data == {f for files in newest.files.values() for f in files}
    assert loc.list_files("staging") == []


# --- readers on S3 -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped_on_s3(s3: MotoServer) -> tuple[str, str]:
    """(bucket, warehouse URL): the shipped seeds loaded once to S3, for the tests below that read it."""
    bucket = s3.new_bucket()
    s3.upload_folder(SEEDS, f"s3://{bucket}/seeds")
    wh = f"s3://{bucket}/wh"
    s3_run(s3, f"s3://{bucket}/seeds", wh, "--orchestrator", "none")
    return bucket, wh


def test_query_status_and_catalog_on_s3(s3: MotoServer, shipped_on_s3: tuple[str, str], tmp_path: Path) -> None:
    """Reads, and `pipeline catalog` rewrites the catalog of the same snapshot (the BI test below reads it too)."""
    bucket, wh = shipped_on_s3
    env = cli_env(**s3.env())

    q = run_cli("query", "select count(*) as n from articles", "--warehouse", wh, "--format", "json", env=env)
    assert json.loads(q.stdout) == [{"n": 15}]
    status = json.loads(run_cli("status", "--warehouse", wh, "--format", "json", env=env).stdout)
    assert status["healthy"] and status["rows"]["articles"] == 15 and status["warehouse"] == wh

    rebuilt = run_cli("catalog", "--warehouse", wh, env=env)
    assert "rebuilt s3://" in rebuilt.stdout
    local = tmp_path / "catalog.duckdb"
    local.write_bytes(s3.client().cat_file(f"{bucket}/wh/catalog.duckdb"))
    con = duckdb.connect(str(local), read_only=True)
    try:
        sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'articles'").fetchone()
        assert sql is not None and f"s3://{bucket}/wh/data/articles/" in sql[0]
    finally:
        con.close()


def test_bi_client_reads_the_s3_warehouse_with_duckdb_httpfs(
    s3: MotoServer, shipped_on_s3: tuple[str, str], tmp_path: Path
) -> None:
    """DuckDB 1.5.5 + httpfs (its own venv) ATTACHes the catalog on S3; SQLAlchemy/duckdb_engine does the same."""
    python, _ = ensure_venv(BI_S3_VENV, BI_S3_REQUIREMENTS)
    _, wh = shipped_on_s3
    expected = {t: len(rows) for t, rows in export(wh).items()}
    proc = subprocess.run(
        [str(python), str(REPO / "tests" / "bi" / "s3_probe.py"), s3.endpoint.removeprefix("http://"),
         f"{wh}/catalog.duckdb", ",".join(CONTENT_TABLES)],
        cwd=tmp_path, env=cli_env(**s3.env()), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    assert got["duckdb"] == "1.5.5"
    assert got["duckdb_counts"] == expected == got["sqlalchemy_counts"]
    assert got["snapshot"] == commits.require_newest(Location.parse(wh)).id
    con = connect(Location.parse(wh))
    try:
        top = con.execute(
            "SELECT provider_name, count(*) FROM article_facts GROUP BY ALL ORDER BY 2 DESC, 1 LIMIT 1"
        ).fetchall()[0]
    finally:
        con.close()
    assert got["top_provider"] == list(top)
    assert {*CONTENT_TABLES, "article_facts", "related_resolved"} <= set(got["sqlalchemy_views"])
    assert got["pandas_rows"] == expected["articles"] == 15
