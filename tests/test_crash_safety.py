"""Crash safety with real processes: SIGKILL at every fault point, concurrent runs, stale locks, live readers.

Each run is a separate `pipeline run` process, killed for real (faults.KILL_AT makes it SIGKILL
itself). Readers are separate processes started in another working directory, as a BI tool would be.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline import faults

from .conftest import CONTENT_TABLES, REPO, SEEDS, cli_env, export_tables, open_catalog, run_args, run_cli
from .delta_readers import deltalake_rows, pipeline_rows
from .test_incremental import (
    ECB,
    FED,
    N_SEEDS,
    SCOTLAND,
    counters,
    counts,
    current_snapshot,
    load_runs,
    new_doc,
    set_key,
    without_run_columns,
)

FAULT_POINTS = faults.KILL_POINTS
ALL_TABLES = (*CONTENT_TABLES, "load_runs")
COMMITTED = ("after_commit", "after_delta")  # points after the project commit
TIMEOUT = 120

# Runs in its own process and working directory: every row of every table, digested the same way as
# digest() below, plus the snapshot the catalog shows.
CATALOG_DIGEST = r"""
import hashlib, json, sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
out = {}
for t in sys.argv[2].split(","):
    rows = sorted(con.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
    out[t] = [len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()]
out["pipeline_snapshot"] = con.execute("SELECT snapshot_id FROM pipeline_snapshot").fetchone()[0]
print(json.dumps(out))
"""

# Holds one read-only connection across a run: counts, waits for a signal file, counts again.
READER = r"""
import os, sys, time, duckdb
catalog, ready, go = sys.argv[1:4]
con = duckdb.connect(catalog, read_only=True)
q = lambda: [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("articles", "article_topics")]
first = q()
with open(ready + ".tmp", "w") as fh:
    fh.write(repr(first))
os.replace(ready + ".tmp", ready)
deadline = time.monotonic() + 60
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("reader: no go signal")
    time.sleep(0.02)
print(first, q())
"""


# --- helpers -------------------------------------------------------------------------------------------


def digest(export: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[Any]]:
    return {t: [len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()] for t, rows in export.items()}


def catalog_from_elsewhere(warehouse: Path, cwd: Path) -> dict[str, Any]:
    """Open W/catalog.duckdb read-only in another process and directory; read every row of every table."""
    cwd.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", CATALOG_DIGEST, str(warehouse / "catalog.duckdb"), ",".join(ALL_TABLES)],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def mutate(seeds: Path) -> None:
    """Change two files, add one, delete one (the folder keeps 15 files)."""
    set_key(seeds / ECB, "title", '"ECB Edited Before The Crash"')
    set_key(seeds / FED, "publishedDateTime", "2024-05-20T08:00:00Z")
    (seeds / "2024" / "added.md").write_text(new_doc("https://example.com/news/added"), encoding="utf-8")
    (seeds / SCOTLAND).unlink()


def assert_no_debris(warehouse: Path) -> None:
    assert os.listdir(warehouse / "staging") == []
    leftovers = [n for n in os.listdir(warehouse) if n.startswith(("current.tmp", "catalog.duckdb.tmp"))]
    assert leftovers == []


def newest_commit(warehouse: Path) -> str:
    """Snapshot id of the newest commit file: what a run or `pipeline query` reads."""
    newest = max((warehouse / "commits").glob("*.json"))
    return str(json.loads(newest.read_text(encoding="utf-8"))["id"])


def catalog_snapshot(warehouse: Path) -> str:
    con = open_catalog(warehouse)
    try:
        row = con.execute("SELECT snapshot_id FROM pipeline_snapshot").fetchone()
        assert row is not None
        return str(row[0])
    finally:
        con.close()


@contextmanager
def processes(*commands: list[str], env: dict[str, str] | None = None) -> Iterator[list[subprocess.Popen[str]]]:
    """Start all commands at once; whatever happens, none outlives the test."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for cmd in commands:
            procs.append(
                subprocess.Popen(
                    cmd, cwd=REPO, env=env or cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
            )
        yield procs
    finally:
        for p in procs:
            if p.returncode is None:  # not waited for: the test failed early
                p.kill()
                p.communicate(timeout=TIMEOUT)


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def final_export(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[Any, ...]]]:
    """A clean full load of the folder as mutate() leaves it."""
    root = tmp_path_factory.mktemp("final")
    shutil.copytree(SEEDS, root / "seeds")
    mutate(root / "seeds")
    run_cli("run", "--seeds", str(root / "seeds"), "--warehouse", str(root / "w"), "--orchestrator", "none", "--quiet")
    return without_run_columns(export_tables(root / "w"))


@pytest.fixture(scope="module")
def big_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3000 small valid seed files: the shipped ECB seed with a different webUrl each."""
    folder = tmp_path_factory.mktemp("big") / "seeds"
    folder.mkdir()
    template = (SEEDS / ECB).read_text(encoding="utf-8")
    for i in range(3000):
        text = re.sub(r"(?m)^webUrl: .*$", f'webUrl: "https://example.com/news/{i:05d}"', template, count=1)
        (folder / f"{i:05d}.md").write_text(text, encoding="utf-8")
    return folder


# --- tests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_kill_at_fault_point_keeps_previous_snapshot_then_recovers(
    point: str, load, seeds: Path, warehouse: Path, tmp_path: Path, final_export
) -> None:
    load()
    previous = current_snapshot(warehouse)
    before = digest(export_tables(warehouse, ALL_TABLES))
    mutate(seeds)

    killed = load(check=False, env=cli_env(**{faults.KILL_AT: point}))
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)

    if point in COMMITTED:  # committed; `current` and the catalog still show the previous snapshot
        assert newest_commit(warehouse) != previous.name
    else:
        assert newest_commit(warehouse) == previous.name
    assert current_snapshot(warehouse) == previous
    assert set(os.listdir(warehouse / "snapshots")) == {previous.name}
    assert os.listdir(warehouse / "staging") != []  # the killed run's debris, until the next run

    # Another process in another directory: the catalog is complete, queryable, and the previous snapshot.
    seen = catalog_from_elsewhere(warehouse, tmp_path / "elsewhere")
    assert seen.pop("pipeline_snapshot") == previous.name
    assert seen == before

    load()
    assert without_run_columns(export_tables(warehouse)) == final_export
    assert deltalake_rows(str(warehouse)) == pipeline_rows(str(warehouse))  # Delta caught up too
    assert_no_debris(warehouse)
    assert catalog_snapshot(warehouse) == current_snapshot(warehouse).name
    runs = [counters(r) for r in load_runs(warehouse)]
    change = counts(N_SEEDS, new=1, changed=2, deleted=1, parsed=3)
    if point in COMMITTED:  # the killed run published; the rerun found nothing left to do
        assert runs[1:] == [change, counts(N_SEEDS)]
    else:
        assert runs[1:] == [change]


def test_a_merge_worker_that_dies_fails_the_run_and_keeps_the_previous_snapshot(
    load, seeds: Path, warehouse: Path, final_export
) -> None:
    """The merges run in a worker process: when it is killed (the kernel's OOM killer, say) with month
    files half written, the run itself does not die. It fails with one line, publishes nothing, and the
    next run loads as if nothing had happened."""
    load()
    previous = current_snapshot(warehouse)
    before = digest(export_tables(warehouse, ALL_TABLES))
    mutate(seeds)

    failed = load(check=False, env=cli_env(**{faults.KILL_AT: faults.WORKER_KILL_POINTS[0]}))
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1, (failed.returncode, failed.stderr)
    assert "stage build of run" in failed.stderr and "worker process died while running merge_groups" in failed.stderr
    assert newest_commit(warehouse) == previous.name and current_snapshot(warehouse) == previous
    assert digest(export_tables(warehouse, ALL_TABLES)) == before

    load()
    assert without_run_columns(export_tables(warehouse)) == final_export
    assert_no_debris(warehouse)


def test_killed_run_does_not_block_the_next(load, seeds: Path, warehouse: Path) -> None:
    load()
    set_key(seeds / ECB, "title", '"ECB Edited Before The Kill"')
    killed = load(check=False, env=cli_env(**{faults.KILL_AT: "after_related_articles"}))
    assert killed.returncode == -signal.SIGKILL
    assert (warehouse / ".lock").exists()  # the file stays; the kernel dropped the flock with the process

    started = time.monotonic()
    proc = load(check=False)  # no --wait: a lock still held would exit 75 at once
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 60
    assert counters(load_runs(warehouse)[-1]) == counts(N_SEEDS, changed=1, parsed=1)
    assert_no_debris(warehouse)


def test_concurrent_runs_one_is_locked_out(big_seeds: Path, warehouse: Path) -> None:
    with processes(run_args(big_seeds, warehouse), run_args(big_seeds, warehouse)) as procs:
        outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 75], (codes, outputs)
    out, err = outputs[codes.index(75)]
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "lock" in lines[0] and str(warehouse) in lines[0]

    runs = load_runs(warehouse)
    assert [counters(r) for r in runs] == [counts(3000, new=3000, parsed=3000)]
    exported = export_tables(warehouse, ("articles", "source_files", "rejects"))
    assert len(exported["articles"]) == 3000
    assert len({r[0] for r in exported["articles"]}) == 3000
    assert exported["rejects"] == []
    assert catalog_snapshot(warehouse) == current_snapshot(warehouse).name == runs[0]["snapshot_id"]
    assert_no_debris(warehouse)
    assert not (warehouse / "last_failure.json").exists()  # the locked-out run did nothing, not even fail


def test_concurrent_runs_with_wait_both_succeed(big_seeds: Path, warehouse: Path) -> None:
    cmd = run_args(big_seeds, warehouse, "--wait", "120")
    launched = datetime.now(UTC).replace(tzinfo=None)  # the catalog's timestamps are UTC wall time (issue 20)
    with processes(cmd, cmd) as procs:
        outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs

    first, second = load_runs(warehouse)
    assert counters(first) == counts(3000, new=3000, parsed=3000)
    assert counters(second) == counts(3000)  # the second found the first's work done
    # Both processes were alive while the first one worked; the second started only after it finished.
    assert launched < first["finished_at"] <= second["started_at"]
    assert second["snapshot_id"] == current_snapshot(warehouse).name == catalog_snapshot(warehouse)
    exported = export_tables(warehouse, ("articles", "article_topics"))
    assert (len(exported["articles"]), len(exported["article_topics"])) == (3000, 12000)
    assert_no_debris(warehouse)


def test_reader_keeps_its_snapshot_during_a_run(load, seeds: Path, warehouse: Path, tmp_path: Path) -> None:
    load()
    elsewhere = tmp_path / "reader"
    elsewhere.mkdir()
    ready, go = tmp_path / "ready", tmp_path / "go"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(warehouse / "catalog.duckdb"), str(ready), str(go)],
        cwd=elsewhere,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert reader.poll() is None, reader.communicate()
            assert time.monotonic() < deadline, "reader never connected"
            time.sleep(0.02)
        old_counts = [N_SEEDS, 53]
        assert ready.read_text() == repr(old_counts)

        # A run that adds an article and rewrites a month the reader's snapshot uses.
        (seeds / "2024" / "added.md").write_text(new_doc("https://example.com/news/while-read"), encoding="utf-8")
        set_key(seeds / ECB, "title", '"ECB Edited While Someone Reads"')
        proc = load(check=False)
        assert proc.returncode == 0, proc.stderr

        go.touch()
        out, err = reader.communicate(timeout=TIMEOUT)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
    assert reader.returncode == 0, err
    assert out.split("\n")[0] == f"{old_counts} {old_counts}"  # same connection: still the old snapshot

    con = open_catalog(warehouse)  # a fresh connection sees the new snapshot
    try:
        assert con.execute("SELECT count(*) FROM articles").fetchone() == (N_SEEDS + 1,)
        assert con.execute("SELECT count(*) FROM article_topics").fetchone() == (55,)
    finally:
        con.close()


def test_orphan_snapshot_does_not_cut_the_grace_period(load, seeds: Path, warehouse: Path) -> None:
    grace = 2.0
    load()
    previous = current_snapshot(warehouse)
    set_key(seeds / ECB, "title", '"ECB Edited Before The Kill"')
    killed = load(check=False, env=cli_env(**{faults.KILL_AT: "before_commit"}))
    assert killed.returncode == -signal.SIGKILL
    time.sleep(grace + 0.5)  # the crash is older than the grace period; `previous` is still current

    reader = open_catalog(warehouse)  # a reader that connected while `previous` was current
    try:
        load(env=cli_env(PIPELINE_GC_GRACE_SECONDS=str(grace), PIPELINE_RETENTION=f"{grace:g}s"))
        # `previous` was current until this very run: it must outlive it by the retention period.
        assert reader.execute("SELECT count(*) FROM articles").fetchone() == (N_SEEDS,)
        assert previous.is_dir()
    finally:
        reader.close()


def test_a_run_that_loses_its_lease_stops_at_its_next_check_and_writes_no_failure(s3: Any, tmp_path: Path) -> None:
    """Another run takes the lease over while this one works (here: the lease file is replaced, as a
    takeover after an expiry does): this run stops at its next lock check with exit 75, commits
    nothing, and leaves the winner's state alone: no failure record, the winner's lease in place."""
    from harness.s3_server import put
    from pipeline.storage.location import Location
    from pipeline.warehouse import commits

    bucket = s3.new_bucket("lost")
    s3.upload_folder(SEEDS, f"s3://{bucket}/seeds")
    wh = Location.parse(f"s3://{bucket}/wh")
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--seeds", f"s3://{bucket}/seeds", "--warehouse", wh.url,
           "--orchestrator", "none", "--quiet"]  # fmt: skip
    # It holds the lease 3 s before its first stage (renewed every second): time enough to take it over.
    env = cli_env(**s3.env(), PIPELINE_LEASE_SECONDS="3", **{faults.SLEEP_HOLDING_LOCK: "3"})
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not wh.exists(".lease.json"):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        winner = json.dumps({"run_id": "the-winner", "expires_at": time.time() + 600}).encode()
        put(s3.client(), bucket, "wh/.lease.json", winner)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 75, err
    warning, error = err.splitlines()
    assert out == "" and warning.startswith("pipeline: warning: settings from the environment:"), err
    assert re.match(r"pipeline: error: stage (parse|build|check|publish) of run \S+ failed", error), err
    assert "lost its writer lease" in error, err
    assert commits.versions(wh) == [] and commits.read_newest(wh) is None  # nothing committed
    assert not wh.exists(commits.LAST_FAILURE)  # the winner's warehouse gets no failure record of ours
    assert json.loads(wh.read_bytes(".lease.json"))["run_id"] == "the-winner"
