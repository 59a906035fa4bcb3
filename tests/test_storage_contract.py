"""The storage interface, given/expect, on both kinds of location: one local folder, one moto S3 prefix.

The warehouse code calls only these operations and never asks which kind it has, so each test
here runs twice and must hold on both (what only one kind can do says so in its own test).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.s3_server import MotoServer
from pipeline.errors import WarehouseLocked
from pipeline.storage.location import Location


@pytest.fixture(params=["local", "s3"])
def loc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Location]:
    if request.param == "local":
        yield Location.parse(str(tmp_path / "root"))
        return
    s3: MotoServer = request.getfixturevalue("s3")
    yield Location.parse(f"s3://{s3.new_bucket()}/pre/fix")


def test_files_are_written_read_listed_and_deleted(loc: Location) -> None:
    loc.makedirs("")
    loc.write_bytes("a/one.txt", b"1")
    loc.write_bytes("a/b/two.txt", b"22")
    loc.write_bytes("top.txt", b"333")
    assert loc.read_bytes("a/one.txt") == b"1" and loc.read_text("top.txt") == "333"
    assert loc.read_text("missing.txt") is None
    with pytest.raises(FileNotFoundError):
        loc.read_bytes("missing.txt")
    assert loc.exists("a/b/two.txt") and not loc.exists("a/b/none.txt")
    assert sorted((e.rel, e.size) for e in loc.list_files()) == [("a/b/two.txt", 2), ("a/one.txt", 1), ("top.txt", 3)]
    assert sorted(e.rel for e in loc.list_files("a")) == ["a/b/two.txt", "a/one.txt"]
    assert sorted(loc.list_names("a")) == ["b", "one.txt"] and sorted(loc.list_names("")) == ["a", "top.txt"]
    assert loc.list_names("nowhere") == []
    loc.write_bytes("a/one.txt", b"replaced whole")
    assert loc.read_bytes("a/one.txt") == b"replaced whole"
    loc.delete(["top.txt", "never-was.txt"])
    assert not loc.exists("top.txt")
    loc.delete_tree("a")
    assert loc.list_files() == []


def test_create_only_has_exactly_one_winner(loc: Location) -> None:
    loc.makedirs("commits")
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def race(i: int) -> None:
        barrier.wait()
        results.append(loc.create_only("commits/1.json", f"writer {i}".encode()))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert loc.read_bytes("commits/1.json").startswith(b"writer ")
    assert not loc.create_only("commits/1.json", b"late")


def test_fetch_reads_at_most_the_cap_plus_one_byte_and_reports_each_failure(loc: Location) -> None:
    loc.write_bytes("s/small.md", b"abc")
    loc.write_bytes("s/big.md", b"x" * 100)
    loc.write_bytes("s/empty.md", b"")
    small, big, empty, missing = loc.fetch_objects(["s/small.md", "s/big.md", "s/empty.md", "s/gone.md"], 10)
    assert not isinstance(small, BaseException) and small.data == b"abc"
    assert not isinstance(big, BaseException) and big.data == b"x" * 11  # enough to tell "too large"
    assert not isinstance(empty, BaseException) and empty.data == b""
    assert isinstance(missing, FileNotFoundError)
    assert loc.fetch_many(["s/small.md"], 10) == [b"abc"]


def test_parquet_files_are_read_by_pyarrow_and_duckdb_through_the_location(loc: Location, tmp_path: Path) -> None:
    data = pa.table({"id": ["a", "b"], "n": [1, 2]})
    with loc.open_write("data/t/part.parquet") as fh:
        pq.write_table(data, fh)
    url = loc.join("data/t/part.parquet")
    assert loc.read_parquet([url]).to_pylist() == data.to_pylist()
    with loc.open_read("data/t/part.parquet") as fh:
        assert pq.read_metadata(fh).num_rows == 2
    con = duckdb.connect(":memory:")
    loc.attach(con)
    assert con.execute(f"SELECT sum(n) FROM read_parquet('{url}')").fetchone() == (3,)


def test_a_finished_local_file_is_moved_in_and_copied_back_out(loc: Location, tmp_path: Path) -> None:
    scratch = loc.scratch()
    made = scratch.fresh_path("catalog.duckdb")
    Path(made).write_bytes(b"catalog bytes")
    loc.put_file(made, "catalog.duckdb")
    assert not Path(made).exists()  # moved, not copied
    assert loc.read_bytes("catalog.duckdb") == b"catalog bytes"
    copy = loc.local_copy("catalog.duckdb", scratch)
    assert copy is not None and Path(copy).read_bytes() == b"catalog bytes"
    assert loc.local_copy("nothing.duckdb", scratch) is None
    scratch.delete_tree("")
    assert not Path(scratch.root).exists()


def test_one_writer_at_a_time(loc: Location) -> None:
    first = loc.writer_lock("run-1", wait_seconds=0, lease_seconds=30)
    try:
        with pytest.raises(WarehouseLocked, match="another run is writing"):
            loc.writer_lock("run-2", wait_seconds=0.2, lease_seconds=30)
        first.check()
        first.confirm()
    finally:
        first.release()
    second = loc.writer_lock("run-2", wait_seconds=0, lease_seconds=30)  # released: free at once
    second.release()


def test_links_for_direct_readers_exist_on_local_disk_only(loc: Location) -> None:
    loc.write_bytes("data/t/p.1.parquet", b"file")
    loc.link_tree("snapshots/s1", {"t": {"p.parquet": "data/t/p.1.parquet"}, "empty": {}}, loc.scratch())
    loc.point_link("current", "snapshots/s1")
    if loc.local:
        assert Path(loc.join("current/t/p.parquet")).read_bytes() == b"file"
        assert Path(loc.join("current/empty")).is_dir()
        assert loc.link_target("current") == "s1"
        loc.link_tree("snapshots/s1", {"other": {}}, loc.scratch())  # kept as it is
        assert not Path(loc.join("snapshots/s1/other")).exists()
    else:
        assert loc.link_target("current") is None and not loc.exists("current")
        assert loc.list_names("snapshots") == []  # an object store never gets copies
