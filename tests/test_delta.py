"""Every table is also a Delta table: readers we did not write agree with `pipeline query`, on disk and on S3.

One scenario per storage: a full load, an incremental run (edit, delete, add), a run killed between
the project commit and the Delta commits, the catch-up by the next run, and GC with no grace. After
each step deltalake, polars and DuckDB's delta extension return for every table exactly the rows
`pipeline query` returns; Delta time travel to the previous version returns what `--as-of` returns;
no current or retained version names a missing file.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.s3_server import MotoServer
from pipeline import faults, schema
from pipeline.storage.location import Location
from pipeline.warehouse import commits, delta
from pipeline.warehouse.commits import Snapshot

from .conftest import SEEDS, cli_env, run_cli
from .delta_readers import deltalake_rows, duckdb_rows, missing_files, pipeline_rows, polars_rows
from .test_incremental import ECB, FED, new_doc, set_key


def run(seeds: Path, wh: str, env: dict[str, str], *extra: str, check: bool = True) -> dict:
    proc = run_cli(
        "run", "--seeds", str(seeds), "--warehouse", wh, "--orchestrator", "none", "--quiet", "--format", "json",
        *extra, env=env, check=check,
    )  # fmt: skip
    return json.loads(proc.stdout) if proc.returncode == 0 else {"returncode": proc.returncode}


def assert_readers_agree(wh: str, endpoint: str | None = None) -> None:
    expected = pipeline_rows(wh)
    assert expected["articles"], "the scenario must load articles"
    assert deltalake_rows(wh) == expected
    assert polars_rows(wh) == expected
    assert duckdb_rows(wh, endpoint) == expected
    assert missing_files(wh) == []


def assert_time_travel(wh: str, version: int) -> None:
    """Delta readers at the Delta versions that reflect project ``version`` see what `--as-of` sees."""
    expected = pipeline_rows(wh, as_of=str(version))
    assert deltalake_rows(wh, version) == expected
    assert polars_rows(wh, version) == expected


def scenario(seeds: Path, wh: str, env: dict[str, str], endpoint: str | None = None) -> None:
    first = run(seeds, wh, env)
    assert set(first["delta_commits"]) == {t.name for t in schema.TABLES}  # version 0 of every table
    assert first["warnings"] == []
    assert_readers_agree(wh, endpoint)

    # Incremental: an edit, a deletion, an addition.
    set_key(seeds / ECB, "title", '"ECB Edited For Delta"')
    (seeds / FED).unlink()
    (seeds / "2024" / "delta-added.md").write_text(new_doc("https://example.com/delta/added"), encoding="utf-8")
    second = run(seeds, wh, env)
    assert second["version"] == 2 and "articles" in second["delta_commits"]
    assert_readers_agree(wh, endpoint)
    assert_time_travel(wh, 1)
    assert pipeline_rows(wh, as_of="1") != pipeline_rows(wh)

    # Killed after the project commit, before any Delta commit: Delta readers still see version 2.
    set_key(seeds / ECB, "title", '"ECB Edited Before The Kill"')
    killed = run(seeds, wh, cli_env(**env, **{faults.KILL_AT: "after_commit"}), check=False)
    assert killed == {"returncode": -signal.SIGKILL}
    assert commits.versions(Location.parse(wh))[-1] == 3
    assert deltalake_rows(wh) == pipeline_rows(wh, as_of="2")
    # The next run (nothing new to read; on S3 it waits for the killed run's lease to expire) catches
    # every table up in one Delta commit each.
    fourth = run(seeds, wh, env, "--wait", "30")
    assert fourth["version"] == 4 and fourth["files"]["parsed"] == 0
    assert "articles" in fourth["delta_commits"]  # version 3's article rows reach Delta now
    assert_readers_agree(wh, endpoint)
    assert_time_travel(wh, 2)

    # A rerun with nothing changed: tables whose files did not change get no Delta commit.
    fifth = run(seeds, wh, env)
    assert "articles" not in fifth["delta_commits"] and "load_runs" in fifth["delta_commits"]

    # GC with no grace and one retained version: only what the newest version names is left, Delta logs intact.
    run(seeds, wh, cli_env(**env, PIPELINE_RETENTION="1", PIPELINE_GC_GRACE_SECONDS="0"))
    loc = Location.parse(wh)
    assert len(commits.versions(loc)) == 1
    assert_readers_agree(wh, endpoint)
    logs = [e.rel for e in loc.list_files(commits.DATA) if "/_delta_log/" in e.rel]
    assert {rel.split("/")[1] for rel in logs} == {t.name for t in schema.TABLES}


def test_delta_tables_on_local_disk(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    shutil.copytree(SEEDS, seeds)
    scenario(seeds, str(tmp_path / "warehouse"), cli_env())


def test_delta_tables_on_s3(s3: MotoServer, tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    shutil.copytree(SEEDS, seeds)
    env = cli_env(**s3.env(), PIPELINE_LEASE_SECONDS="2")  # a killed run's lease expires quickly
    scenario(seeds, f"s3://{s3.new_bucket()}/wh", env, s3.endpoint)


def test_warehouse_from_before_delta_gets_its_tables_on_the_next_run(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    shutil.copytree(SEEDS, seeds)
    wh = tmp_path / "warehouse"
    run(seeds, str(wh), cli_env())
    for log in wh.glob("data/*/_delta_log"):
        shutil.rmtree(log)  # as an older version of the pipeline left it
    again = run(seeds, str(wh), cli_env())
    assert set(again["delta_commits"]) == {t.name for t in schema.TABLES}
    assert deltalake_rows(str(wh)) == pipeline_rows(str(wh))


def test_pipeline_catalog_catches_up(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    shutil.copytree(SEEDS, seeds)
    wh = str(tmp_path / "warehouse")
    run(seeds, wh, cli_env())
    set_key(seeds / ECB, "title", '"ECB Edited Before The Kill"')
    run(seeds, wh, cli_env(**{faults.KILL_AT: "after_commit"}), check=False)
    assert deltalake_rows(wh) != pipeline_rows(wh)
    out = run_cli("catalog", "--warehouse", wh, env=cli_env())
    assert "Delta logs" in out.stdout
    assert deltalake_rows(wh) == pipeline_rows(wh)


def test_history_and_as_of(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    shutil.copytree(SEEDS, seeds)
    wh = str(tmp_path / "warehouse")
    first = run(seeds, wh, cli_env())
    (seeds / FED).unlink()
    run(seeds, wh, cli_env())
    entries = json.loads(run_cli("history", "--warehouse", wh, "--format", "json", env=cli_env()).stdout)
    assert [e["version"] for e in entries] == [2, 1]
    assert entries[1]["run_id"] == first["run_id"]
    assert entries[1]["seen"] == 15 and entries[0]["seen"] == 14
    assert entries[1]["rows"]["articles"] == 15 and entries[0]["rows"]["articles"] == 14

    def count(*extra: str) -> int:
        proc = run_cli("query", "select count(*) as n from articles", "--warehouse", wh, "--format", "json", *extra)
        return int(json.loads(proc.stdout)[0]["n"])

    assert count() == 14 and count("--as-of", "1") == 15
    assert count("--as-of", entries[1]["committed_at"]) == 15  # a time: the newest version committed by then
    refused = run_cli("query", "select 1", "--warehouse", wh, "--as-of", "9", check=False)
    assert refused.returncode == 4 and "version 9 is not retained" in refused.stderr
    early = run_cli("query", "select 1", "--warehouse", wh, "--as-of", "2000-01-01T00:00:00Z", check=False)
    assert early.returncode == 4 and "no retained version" in early.stderr


def test_a_column_added_to_the_declaration_reaches_delta_readers(tmp_path: Path) -> None:
    """A wider declaration widens the Delta schema; files written before it read NULL in the new column."""
    from deltalake import DeltaTable

    seeds = tmp_path / "seeds"
    shutil.copytree(SEEDS, seeds)
    wh = tmp_path / "warehouse"
    run(seeds, str(wh), cli_env())
    loc = Location.parse(str(wh))
    snap = commits.require_newest(loc)
    note = schema.Column("note", "string", "a column added later")
    wider = dataclasses.replace(schema.UNKNOWN_KEYS, columns=(*schema.UNKNOWN_KEYS.columns, note))
    rows = pa.table(
        {"key_path": ["later"], "file_count": pa.array([1], pa.int64()), "first_seen_run_id": ["r"], "note": ["hi"]}
    ).cast(wider.arrow_schema())
    rel = commits.data_name("unknown_keys", "later", "x")
    pq.write_table(rows, wh / rel)
    files = {**snap.files, "unknown_keys": [*snap.files["unknown_keys"], rel]}
    target = Snapshot("x", snap.version + 1, loc, files, {**snap.file_rows, rel: 1}, {"run_id": "x"})
    known = {snap.version: snap}.get
    done = delta.catch_up(loc, target, known, timedelta(hours=1), datetime.now(UTC), tables=(wider,))
    assert done.complete and done.committed == {"unknown_keys": 2}  # 1: the schema change, 2: the new file
    table = DeltaTable(delta.table_uri(loc, "unknown_keys")).to_pyarrow_table()
    assert "note" in table.column_names
    notes = dict(zip(table.column("key_path").to_pylist(), table.column("note").to_pylist(), strict=True))
    assert notes["later"] == "hi" and [v for k, v in notes.items() if k != "later"] == [None, None]


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (datetime(2024, 1, 1, 0, 0, 0, 123456, UTC), datetime(2024, 1, 2, 0, 0, 0, 999999, UTC),
         ("2024-01-01T00:00:00.123Z", "2024-01-02T00:00:01.000Z")),
        (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 0, 0, 0, 1000, UTC),
         ("2024-01-01T00:00:00.000Z", "2024-01-01T00:00:00.001Z")),
    ],
)  # fmt: skip
def test_timestamp_bounds_stay_true_bounds_at_millisecond_precision(low, high, expected) -> None:
    assert delta._bounds("timestamp", low, high) == expected


def test_footer_stats_are_exact(tmp_path: Path) -> None:
    data = pa.table(
        {
            "key_path": ["b", "a", "z" * 100],
            "file_count": pa.array([3, None, -7], pa.int64()),
            "first_seen_run_id": ["r1", "r2", "r3"],
        }
    )
    path = tmp_path / "f.parquet"
    pq.write_table(data, path, row_group_size=2)
    stats = delta.footer_stats(schema.UNKNOWN_KEYS, pq.read_metadata(path))
    assert stats["numRecords"] == 3
    assert stats["nullCount"] == {"key_path": 0, "file_count": 1, "first_seen_run_id": 0}
    assert stats["minValues"] == {"file_count": -7, "first_seen_run_id": "r1"}  # a 100-char string: no bound
    assert stats["maxValues"] == {"file_count": 3, "first_seen_run_id": "r3"}


def test_the_delta_log_stays_bounded_by_checkpoints(tmp_path: Path) -> None:
    """Every CHECKPOINT_EVERY Delta versions a checkpoint: readers replay a few JSON commits, not all of them."""
    seeds = tmp_path / "seeds"
    shutil.copytree(SEEDS, seeds)
    wh = tmp_path / "warehouse"
    for _ in range(delta.CHECKPOINT_EVERY + 1):
        run(seeds, str(wh), cli_env())  # load_runs changes on every run: one Delta commit each
    log = wh / "data" / "load_runs" / "_delta_log"
    assert list(log.glob("*.checkpoint.parquet")), sorted(p.name for p in log.iterdir())  # delta-rs: at version 9
    assert (log / "_last_checkpoint").exists()
    assert deltalake_rows(str(wh)) == pipeline_rows(str(wh))
