"""Incremental, idempotent, crash-safe loads: reruns, touches, edits, deletes, fixed rejects, duplicates, cost, GC.

Every test runs the real CLI (`pipeline run --orchestrator none`) on a private copy of the shipped seeds and
asserts exact table contents through sorted exports, plus the run's accounting in ``load_runs``. Where a state
reached incrementally must equal a fresh full load of the same folder, run-dependent columns are dropped first.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from hypothesis import given
from hypothesis import strategies as st

from pipeline import schema
from pipeline.read.normalize import article_id

from .conftest import CONTENT_TABLES, DOCUMENT_TABLES, catalog_rows, cli_env, export_tables, run_cli

EMPATHY = "000_0d86a7039b408f6d.txt"  # the smallest path; 2023-10 (shared with nothing else)
ECB = "001_d058e49e30bb2af5.md"  # 2023-09, a month it shares with DW
FED = "002_2371d154f89e6ff4.md"  # 2024-01
DW = "007_dd0256e95322ce5e.md"  # 2023-09
ARS = "2024/012_1dc455e33948ba69.md"  # the only article of provider arstechnica.com
SCOTLAND = "014_a7861138f4f3299f.md"  # the only article of 2024-04
N_SEEDS = 15

ECB_SECOND_IMAGE = (
    '  - url: "https://www.reuters.com/resizer/v2/euro-banknotes-chart.png?auth=41aa09bc&width=640&height=360"\n'
    "    width: 640\n"
    "    height: 360\n"
    "    isCached: false\n"
)
ECB_FIRST_IMAGE_URL = (
    "https://www.reuters.com/resizer/v2/ecb-lagarde-frankfurt-2023-09-14.jpg?auth=8c1f0d2e&width=1200&height=628"
)

# Columns whose value depends on which run read a file (or when), not on the folder's content.
RUN_COLUMNS: dict[str, tuple[str, ...]] = {
    "articles": ("run_id",),
    "rejects": ("run_id",),
    "source_files": ("run_id", "mtime_ns"),
    "unknown_keys": ("first_seen_run_id",),
}
COUNTERS = (
    "files_seen",
    "files_new",
    "files_changed",
    "files_unchanged",
    "files_deleted",
    "files_loaded",
    "files_rejected",
    "files_duplicate",
    "files_parsed",
)

Export = dict[str, list[tuple[Any, ...]]]


# --- helpers -------------------------------------------------------------------------------------------


def without_run_columns(export: Export) -> Export:
    """The export with run-dependent columns removed, re-sorted: equal means same content."""
    out: Export = {}
    for table, rows in export.items():
        names = schema.table(table).column_names
        drop = {names.index(c) for c in RUN_COLUMNS.get(table, ())}
        kept = [tuple(v for i, v in enumerate(row) if i not in drop) for row in rows]
        out[table] = sorted(kept, key=repr)
    return out


def fresh_export(seeds: Path, tmp_path: Path, name: str = "fresh") -> Export:
    """Full load of ``seeds`` into a brand-new warehouse, run columns dropped."""
    target = tmp_path / name
    run_cli("run", "--seeds", str(seeds), "--warehouse", str(target), "--orchestrator", "none", "--quiet")
    return without_run_columns(export_tables(target))


def load_runs(warehouse: Path) -> list[dict[str, Any]]:
    """The catalog's load_runs rows, oldest first (tests/test_crash_safety.py imports this name)."""
    return catalog_rows(warehouse, "load_runs", "ORDER BY started_at")


def counters(run: dict[str, Any]) -> dict[str, int]:
    return {k: run[k] for k in COUNTERS}


def counts(
    seen: int,
    *,
    new: int = 0,
    changed: int = 0,
    deleted: int = 0,
    rejected: int = 0,
    duplicate: int = 0,
    parsed: int = 0,
) -> dict[str, int]:
    """Expected load_runs counters; unchanged and loaded follow from the others."""
    return {
        "files_seen": seen,
        "files_new": new,
        "files_changed": changed,
        "files_unchanged": seen - new - changed,
        "files_deleted": deleted,
        "files_loaded": seen - rejected - duplicate,
        "files_rejected": rejected,
        "files_duplicate": duplicate,
        "files_parsed": parsed,
    }


def last_counters(warehouse: Path) -> dict[str, int]:
    return counters(load_runs(warehouse)[-1])


def rows_for(export: Export, table: str, aid: str) -> list[tuple[Any, ...]]:
    """Rows of one article in a document table (article_id is the first column of each)."""
    assert schema.table(table).column_names[0] == "article_id"
    return [row for row in export[table] if row[0] == aid]


def as_dicts(export: Export, table: str) -> list[dict[str, Any]]:
    names = schema.table(table).column_names
    return [dict(zip(names, row, strict=True)) for row in export[table]]


def manifest_row(export: Export, rel: str) -> dict[str, Any]:
    (row,) = [r for r in as_dicts(export, "source_files") if r["source_path"] == rel]
    return row


def article_of(export: Export, rel: str) -> str:
    aid = manifest_row(export, rel)["article_id"]
    assert aid
    return str(aid)


def current_snapshot(warehouse: Path) -> Path:
    return Path(os.path.realpath(warehouse / "current"))


def partition_inodes(snapshot: Path, table: str) -> dict[str, int]:
    folder = snapshot / table
    return {name: (folder / name).stat().st_ino for name in os.listdir(folder)}


def partition_ids(snapshot: Path, table: str, month: str) -> list[str]:
    path = snapshot / table / f"{month}.parquet"
    if not path.exists():
        return []
    return [str(v) for v in pq.read_table(path, columns=["article_id"]).column("article_id").to_pylist()]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_manifest_matches_disk(seeds: Path, warehouse: Path) -> None:
    """source_files holds exactly the files on disk, with their current size, mtime and hash."""
    on_disk = {}
    for path in sorted(p for p in seeds.rglob("*") if p.is_file()):
        st = path.stat()
        on_disk[path.relative_to(seeds).as_posix()] = (st.st_size, st.st_mtime_ns, sha256_of(path))
    manifest = {
        r["source_path"]: (r["size"], r["mtime_ns"], r["source_sha256"])
        for r in as_dicts(export_tables(warehouse, ("source_files",)), "source_files")
    }
    assert manifest == on_disk


def set_key(path: Path, key: str, value: str) -> None:
    """Replace the value of a top-level frontmatter key (the first line starting with ``key:``)."""
    text = path.read_text(encoding="utf-8")
    new, n = re.subn(rf"(?m)^{re.escape(key)}: .*$", lambda _: f"{key}: {value}", text, count=1)
    assert n == 1, f"{path.name} has no top-level {key}"
    path.write_text(new, encoding="utf-8")


def get_key(path: Path, key: str) -> str:
    match = re.search(rf"(?m)^{re.escape(key)}: (.*)$", path.read_text(encoding="utf-8"))
    assert match, f"{path.name} has no top-level {key}"
    return match.group(1)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not in {path.name} exactly once"
    path.write_text(text.replace(old, new), encoding="utf-8")


def new_doc(url: str, title: str | None = "A Fresh Article", published: str = "2024-05-02T10:00:00Z") -> str:
    lines = ["---"]
    if title is not None:
        lines.append(f'title: "{title}"')
    lines += [
        f'webUrl: "{url}"',
        f"publishedDateTime: {published}",
        "provider:",
        "  name: Example News",
        "  domain: example.com",
        "topics:",
        "  - Alpha",
        "  - Beta",
        "---",
        "",
        "Body of the fresh article.",
        "",
    ]
    return "\n".join(lines)


def unquote(value: str) -> str:
    return value.strip().strip('"')


# --- tests ---------------------------------------------------------------------------------------------


def test_rerun_unchanged_is_a_noop(load, seeds: Path, warehouse: Path) -> None:
    load()
    first = export_tables(warehouse)
    first_snap = current_snapshot(warehouse)

    load()

    # Exact equality, run ids included: nothing was reloaded, so no row was rewritten.
    assert export_tables(warehouse) == first
    second_snap = current_snapshot(warehouse)
    assert second_snap != first_snap
    runs = load_runs(warehouse)
    assert [counters(r) for r in runs] == [counts(N_SEEDS, new=N_SEEDS, parsed=N_SEEDS), counts(N_SEEDS)]
    assert runs[1]["snapshot_id"] == second_snap.name
    # A no-op run rewrites no file but load_runs': every partition, the providers, the manifest and the
    # tables derived from it alone are hard links of the previous snapshot's files.
    for table in CONTENT_TABLES:
        assert partition_inodes(second_snap, table) == partition_inodes(first_snap, table), table
    assert_manifest_matches_disk(seeds, warehouse)


def test_touch_rereads_the_file_and_changes_nothing(load, seeds: Path, warehouse: Path) -> None:
    load()
    before = export_tables(warehouse)
    target = seeds / ECB
    st = target.stat()
    new_mtime = st.st_mtime_ns + 7_000_000_000
    os.utime(target, ns=(st.st_atime_ns, new_mtime))

    load()

    after = export_tables(warehouse)
    assert {t: rows for t, rows in after.items() if t != "source_files"} == {
        t: rows for t, rows in before.items() if t != "source_files"
    }
    # Only the manifest's mtime of that file moved; its run_id still names the run that parsed it.
    expected_manifest = [
        {**r, "mtime_ns": new_mtime} if r["source_path"] == ECB else r for r in as_dicts(before, "source_files")
    ]
    assert sorted(as_dicts(after, "source_files"), key=repr) == sorted(expected_manifest, key=repr)
    # Same hash: counted unchanged, not parsed, not changed.
    assert last_counters(warehouse) == counts(N_SEEDS)

    # The new mtime was recorded, so the next run trusts size+mtime and does not read the file again:
    # swap its bytes behind the pipeline's back (same size, same new mtime) and nothing is noticed.
    text = target.read_text(encoding="utf-8")
    swapped = text.replace("Record High", "Record Peak")
    assert swapped != text and len(swapped.encode()) == len(text.encode())
    target.write_text(swapped, encoding="utf-8")
    os.utime(target, ns=(st.st_atime_ns, new_mtime))
    load()
    assert export_tables(warehouse)["source_files"] == after["source_files"]
    assert export_tables(warehouse)["articles"] == before["articles"]
    assert last_counters(warehouse) == counts(N_SEEDS)


def test_same_size_and_mtime_skip_reading_until_touched(load, seeds: Path, warehouse: Path, tmp_path: Path) -> None:
    load()
    before = export_tables(warehouse)
    target = seeds / FED
    st = target.stat()
    text = target.read_text(encoding="utf-8")
    swapped = text.replace("Signal Patience", "Signal Prudence", 1)
    assert len(swapped.encode()) == len(text.encode())
    target.write_text(swapped, encoding="utf-8")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))

    load()
    assert export_tables(warehouse) == before  # not read: size and mtime match the manifest
    assert last_counters(warehouse) == counts(N_SEEDS)

    os.utime(target)  # a new mtime: now it is read, hashed, found changed and reloaded
    load()
    after = export_tables(warehouse)
    aid = article_of(before, FED)
    (row,) = [r for r in as_dicts(after, "articles") if r["article_id"] == aid]
    assert row["title"] == "Fed Officials Signal Prudence on Rate Cuts as Inflation Cools"
    assert row["source_sha256"] == sha256_of(target)
    assert last_counters(warehouse) == counts(N_SEEDS, changed=1, parsed=1)
    assert without_run_columns(after) == fresh_export(seeds, tmp_path)
    assert_manifest_matches_disk(seeds, warehouse)


def test_modified_file_replaces_every_row_of_its_article(load, seeds: Path, warehouse: Path, tmp_path: Path) -> None:
    load()
    before = export_tables(warehouse)
    aid = article_of(before, ECB)
    assert aid in partition_ids(current_snapshot(warehouse), "articles", "2023-09")
    target = seeds / ECB
    set_key(target, "title", '"ECB Holds Rates Steady"')
    edit(target, "  - Euro Zone\n", "")
    edit(target, ECB_SECOND_IMAGE, "")
    set_key(target, "publishedDateTime", "2023-11-02T10:00:00Z")

    load()

    after = export_tables(warehouse)
    (article,) = [r for r in as_dicts(after, "articles") if r["article_id"] == aid]
    assert article["title"] == "ECB Holds Rates Steady"
    assert article["published_at"] == datetime(2023, 11, 2, 10, 0)  # UTC wall time in the catalog (issue 20)
    assert article["source_sha256"] == sha256_of(target)
    assert rows_for(after, "article_topics", aid) == [
        (aid, 0, "European Central Bank"),
        (aid, 1, "Interest Rates"),
        (aid, 2, "Inflation"),
    ]
    assert rows_for(after, "article_images", aid) == [(aid, 0, ECB_FIRST_IMAGE_URL, 1200, 628, True, None)]
    assert rows_for(after, "related_articles", aid) == rows_for(before, "related_articles", aid)
    assert rows_for(after, "related_article_images", aid) == rows_for(before, "related_article_images", aid)
    # Every other article's rows are exactly as before.
    for table in DOCUMENT_TABLES:
        assert [r for r in after[table] if r[0] != aid] == [r for r in before[table] if r[0] != aid], table
    # The article moved partitions: gone from 2023-09 (which keeps DW), present in 2023-11.
    snap = current_snapshot(warehouse)
    dw = article_of(before, DW)
    for table in DOCUMENT_TABLES:
        assert aid not in partition_ids(snap, table, "2023-09"), table
    assert partition_ids(snap, "articles", "2023-09") == [dw]
    assert aid in partition_ids(snap, "articles", "2023-11")
    assert set(partition_ids(snap, "article_topics", "2023-11")) >= {aid}
    assert manifest_row(after, ECB)["partition"] == "2023-11"
    assert last_counters(warehouse) == counts(N_SEEDS, changed=1, parsed=1)
    assert without_run_columns(after) == fresh_export(seeds, tmp_path)
    assert_manifest_matches_disk(seeds, warehouse)


def test_deleted_files_leave_every_table(load, seeds: Path, warehouse: Path, tmp_path: Path) -> None:
    (seeds / "broken.md").write_text(new_doc("https://example.com/broken", title=None), encoding="utf-8")
    load()
    before = export_tables(warehouse)
    assert [r["source_path"] for r in as_dicts(before, "rejects")] == ["broken.md"]
    assert "arstechnica.com" in [r["domain"] for r in as_dicts(before, "providers")]
    aid = article_of(before, ARS)
    assert all(rows_for(before, t, aid) for t in ("articles", "article_topics", "article_images"))

    (seeds / ARS).unlink()
    (seeds / "broken.md").unlink()
    load()

    after = export_tables(warehouse)
    for table in DOCUMENT_TABLES:
        assert after[table] == [r for r in before[table] if r[0] != aid], table
    assert after["rejects"] == []
    assert {r["source_path"] for r in as_dicts(after, "source_files")} == {
        r["source_path"] for r in as_dicts(before, "source_files")
    } - {ARS, "broken.md"}
    assert "arstechnica.com" not in [r["domain"] for r in as_dicts(after, "providers")]
    assert last_counters(warehouse) == counts(N_SEEDS - 1, deleted=2)
    assert without_run_columns(after) == fresh_export(seeds, tmp_path)
    assert_manifest_matches_disk(seeds, warehouse)


def test_fixed_reject_loads_and_leaves_rejects(load, seeds: Path, warehouse: Path, tmp_path: Path) -> None:
    load()
    url = "https://example.com/news/fixed-later"
    aid = article_id(url)
    doc = seeds / "2024" / "new.md"
    doc.write_text(new_doc(url, title=None), encoding="utf-8")

    load()
    broken = export_tables(warehouse)
    (reject,) = as_dicts(broken, "rejects")
    assert {k: reject[k] for k in ("source_path", "source_sha256", "stage", "reason", "field")} == {
        "source_path": "2024/new.md",
        "source_sha256": sha256_of(doc),
        "stage": "contract",
        "reason": "missing_field",
        "field": "title",
    }
    assert manifest_row(broken, "2024/new.md")["status"] == "rejected"
    assert all(rows_for(broken, t, aid) == [] for t in DOCUMENT_TABLES)
    assert last_counters(warehouse) == counts(N_SEEDS + 1, new=1, rejected=1, parsed=1)

    doc.write_text(new_doc(url, title="Fixed Headline"), encoding="utf-8")
    load()
    fixed = export_tables(warehouse)
    assert fixed["rejects"] == []
    (article,) = [r for r in as_dicts(fixed, "articles") if r["article_id"] == aid]
    assert (article["title"], article["source_path"]) == ("Fixed Headline", "2024/new.md")
    assert rows_for(fixed, "article_topics", aid) == [(aid, 0, "Alpha"), (aid, 1, "Beta")]
    assert manifest_row(fixed, "2024/new.md")["status"] == "loaded"
    assert last_counters(warehouse) == counts(N_SEEDS + 1, changed=1, parsed=1)
    assert without_run_columns(fixed) == fresh_export(seeds, tmp_path)


def test_breaking_a_loaded_file_removes_its_rows_until_fixed(
    load, seeds: Path, warehouse: Path, tmp_path: Path
) -> None:
    load()
    before = export_tables(warehouse)
    aid = article_of(before, ECB)
    target = seeds / ECB
    original = target.read_bytes()
    edit(target, "\ntitle: ", "\nheadline: ")  # no title any more: the contract refuses it

    load()
    broken = export_tables(warehouse)
    for table in DOCUMENT_TABLES:
        assert broken[table] == [r for r in before[table] if r[0] != aid], table
    assert [(r["source_path"], r["reason"], r["field"]) for r in as_dicts(broken, "rejects")] == [
        (ECB, "missing_field", "title")
    ]
    row = manifest_row(broken, ECB)
    assert (row["status"], row["article_id"], row["partition"]) == ("rejected", None, None)
    assert last_counters(warehouse) == counts(N_SEEDS, changed=1, rejected=1, parsed=1)
    assert without_run_columns(broken) == fresh_export(seeds, tmp_path)

    target.write_bytes(original)
    load()
    assert without_run_columns(export_tables(warehouse)) == without_run_columns(before)
    assert last_counters(warehouse) == counts(N_SEEDS, changed=1, parsed=1)


def test_rerun_with_an_oversized_file_is_a_noop(load, seeds: Path, warehouse: Path) -> None:
    cap = "3000"  # 010_ac809167730650d9.txt is 3029 bytes; every other seed is smaller
    load("--max-file-bytes", cap)
    first = export_tables(warehouse)
    assert [(r["source_path"], r["reason"]) for r in as_dicts(first, "rejects")] == [
        ("010_ac809167730650d9.txt", "too_large")
    ]
    load("--max-file-bytes", cap)
    assert last_counters(warehouse) == counts(N_SEEDS, rejected=1)
    assert export_tables(warehouse) == first


def test_url_collision_smaller_path_wins_and_undo_restores(load, seeds: Path, warehouse: Path, tmp_path: Path) -> None:
    """A larger path takes a smaller path's webUrl: it becomes a duplicate; undoing the edit restores it."""
    load()
    before = export_tables(warehouse)
    winner, loser = article_of(before, EMPATHY), article_of(before, SCOTLAND)
    original = (seeds / SCOTLAND).read_bytes()
    set_key(seeds / SCOTLAND, "webUrl", get_key(seeds / EMPATHY, "webUrl"))

    load()
    clash = export_tables(warehouse)
    (reject,) = as_dicts(clash, "rejects")
    assert (reject["source_path"], reject["stage"], reject["reason"], reject["field"]) == (
        SCOTLAND,
        "duplicate",
        "duplicate_identity",
        "webUrl",
    )
    assert EMPATHY in reject["message"]
    row = manifest_row(clash, SCOTLAND)
    assert (row["status"], row["article_id"]) == ("duplicate", winner)
    for table in DOCUMENT_TABLES:
        assert rows_for(clash, table, winner) == rows_for(before, table, winner), table
        assert rows_for(clash, table, loser) == [], table
    assert last_counters(warehouse) == counts(N_SEEDS, changed=1, duplicate=1, parsed=1)
    assert without_run_columns(clash) == fresh_export(seeds, tmp_path, "fresh-clash")

    (seeds / SCOTLAND).write_bytes(original)
    load()
    assert without_run_columns(export_tables(warehouse)) == without_run_columns(before)
    assert last_counters(warehouse) == counts(N_SEEDS, changed=1, parsed=1)
    assert_manifest_matches_disk(seeds, warehouse)


def test_smaller_path_taking_a_url_wins_it(load, seeds: Path, warehouse: Path, tmp_path: Path) -> None:
    """The smaller path takes a larger path's webUrl: the unchanged larger file becomes the duplicate."""
    load()
    before = export_tables(warehouse)
    old_id, taken = article_of(before, EMPATHY), article_of(before, SCOTLAND)
    set_key(seeds / EMPATHY, "webUrl", get_key(seeds / SCOTLAND, "webUrl"))

    load()
    after = export_tables(warehouse)
    (article,) = rows_for(after, "articles", taken)
    assert dict(zip(schema.table("articles").column_names, article, strict=True))["source_path"] == EMPATHY
    assert rows_for(after, "article_topics", taken) == [(taken, i, t) for i, t in enumerate(["AI in Healthcare", "AI"])]
    assert all(rows_for(after, t, old_id) == [] for t in DOCUMENT_TABLES)
    assert [(r["source_path"], r["reason"]) for r in as_dicts(after, "rejects")] == [(SCOTLAND, "duplicate_identity")]
    assert manifest_row(after, SCOTLAND)["status"] == "duplicate"
    assert last_counters(warehouse) == counts(N_SEEDS, changed=1, duplicate=1, parsed=1)
    assert without_run_columns(after) == fresh_export(seeds, tmp_path)


def test_deleting_the_winner_promotes_the_duplicate(load, seeds: Path, warehouse: Path, tmp_path: Path) -> None:
    copy = seeds / "zz_copy_of_empathy.txt"
    copy.write_bytes((seeds / EMPATHY).read_bytes())
    load()
    before = export_tables(warehouse)
    aid = article_of(before, EMPATHY)
    assert manifest_row(before, copy.name)["status"] == "duplicate"
    assert last_counters(warehouse) == counts(N_SEEDS + 1, new=N_SEEDS + 1, duplicate=1, parsed=N_SEEDS + 1)

    (seeds / EMPATHY).unlink()
    load()
    after = export_tables(warehouse)
    (article,) = [r for r in as_dicts(after, "articles") if r["article_id"] == aid]
    assert article["source_path"] == copy.name
    for table in DOCUMENT_TABLES[1:]:
        assert rows_for(after, table, aid) == rows_for(before, table, aid), table
    assert after["rejects"] == []
    # The promoted file is re-read (its rows existed nowhere) but its content did not change.
    assert last_counters(warehouse) == counts(N_SEEDS, deleted=1, parsed=1)
    assert without_run_columns(after) == fresh_export(seeds, tmp_path)


def test_undoing_a_winning_collision_restores_both(load, seeds: Path, warehouse: Path, tmp_path: Path) -> None:
    load()
    before = without_run_columns(export_tables(warehouse))
    original = (seeds / EMPATHY).read_bytes()
    set_key(seeds / EMPATHY, "webUrl", get_key(seeds / SCOTLAND, "webUrl"))
    load()
    (seeds / EMPATHY).write_bytes(original)
    proc = load(check=False)
    assert proc.returncode == 0, proc.stderr
    assert without_run_columns(export_tables(warehouse)) == before


def test_promotion_and_another_edit_in_one_run(load, seeds: Path, warehouse: Path, tmp_path: Path) -> None:
    (seeds / "zz_copy_of_empathy.txt").write_bytes((seeds / EMPATHY).read_bytes())
    load()
    (seeds / EMPATHY).unlink()
    set_key(seeds / ECB, "title", '"ECB Edited In The Same Run"')
    proc = load(check=False)
    assert proc.returncode == 0, proc.stderr
    assert without_run_columns(export_tables(warehouse)) == fresh_export(seeds, tmp_path)


def test_a_change_rewrites_only_the_months_it_touches(load, seeds: Path, warehouse: Path) -> None:
    load()
    first = current_snapshot(warehouse)
    set_key(seeds / ECB, "title", '"ECB Edited"')  # stays in 2023-09
    load()
    second = current_snapshot(warehouse)
    assert last_counters(warehouse) == counts(N_SEEDS, changed=1, parsed=1)
    assert_only_months_rewritten(first, second, {"2023-09"})

    # The only article of 2024-04 moves to 2023-12: both months are rewritten, 2024-04 disappears.
    aid = article_id(unquote(get_key(seeds / SCOTLAND, "webUrl")))
    set_key(seeds / SCOTLAND, "publishedDateTime", "2023-12-24T12:00:00Z")
    load()
    third = current_snapshot(warehouse)
    assert last_counters(warehouse) == counts(N_SEEDS, changed=1, parsed=1)
    assert_only_months_rewritten(second, third, {"2023-12", "2024-04"})
    for table in DOCUMENT_TABLES:
        assert not (third / table / "2024-04.parquet").exists(), table
    assert aid in partition_ids(third, "articles", "2023-12")
    assert aid in partition_ids(third, "article_topics", "2023-12")


def assert_only_months_rewritten(old: Path, new: Path, months: set[str]) -> None:
    for table in DOCUMENT_TABLES:
        before, after = partition_inodes(old, table), partition_inodes(new, table)
        for name, inode in after.items():
            if name.removesuffix(".parquet") in months:
                assert inode != before.get(name), f"{table}/{name} should have been rewritten"
            else:
                assert before.get(name) == inode, f"{table}/{name} was rewritten (or created) but not touched"
        untouched = {n for n in before if n.removesuffix(".parquet") not in months}
        assert untouched <= set(after), f"{table}: untouched partitions lost: {untouched - set(after)}"


def test_gc_keeps_old_snapshots_for_the_retention_period(load, seeds: Path, warehouse: Path) -> None:
    snapshots = warehouse / "snapshots"
    load()
    first = current_snapshot(warehouse)
    set_key(seeds / ECB, "title", '"ECB Edited Once"')
    load()
    second = current_snapshot(warehouse)
    # Default retention (24 hours): the superseded snapshot stays, complete and readable.
    assert sorted(os.listdir(snapshots)) == sorted([first.name, second.name])
    for table in DOCUMENT_TABLES:
        for name in os.listdir(first / table):
            pq.read_table(first / table / name)

    set_key(seeds / ECB, "title", '"ECB Edited Twice"')
    load(env=cli_env(PIPELINE_RETENTION="1", PIPELINE_GC_GRACE_SECONDS="0"))  # keep the newest version only
    third = current_snapshot(warehouse)
    assert os.listdir(snapshots) == [third.name]
    # Files first written by the collected snapshots live on as hard links in the current one.
    exported = export_tables(warehouse)
    assert len(exported["articles"]) == N_SEEDS
    assert [r for r in as_dicts(exported, "articles") if r["source_path"] == ECB][0]["title"] == "ECB Edited Twice"
    assert len(load_runs(warehouse)) == 3


def _claim(article: str, path: str, status: str, parsed: bool) -> dict[str, Any]:
    return {
        "article_id": article,
        "source_path": path,
        "status": status,
        "mtime_ns": 7,
        "etag": None,
        "_parsed": parsed,
    }


def test_dedupe_decides_every_contest_without_changing_its_input() -> None:
    """resolve's rule, given/expect: the smallest path wins; a winner that was a duplicate and was not
    parsed this run is promoted (re-read; its outcome decides), one that was parsed is loaded as it is."""
    import copy

    from pipeline.engine.stages import _dedupe

    claims = [
        _claim("a", "b.md", "loaded", True),
        _claim("a", "a.md", "duplicate", False),  # takes the URL back: promoted, b.md waits for the re-read
        _claim("x", "z.md", "loaded", False),
        _claim("x", "y.md", "duplicate", True),  # parsed this run: loaded now, z.md becomes the duplicate
    ]
    before = copy.deepcopy(claims)
    decisions, promoted = _dedupe(claims)
    assert claims == before
    assert promoted == [("a.md", 7, None)]
    assert list(decisions) == ["a.md", "y.md", "z.md"]
    assert decisions["a.md"] is None
    assert decisions["y.md"] is not None and (decisions["y.md"]["status"], decisions["y.md"]["reason"]) == (
        "loaded",
        None,
    )
    z = decisions["z.md"]
    assert z is not None and (z["status"], z["reason"]) == ("duplicate", "duplicate_identity")
    assert "'y.md'" in z["message"] and "_parsed" not in z


manifest_rows = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d", None]),  # identity URLs collide often; a reject may have none
        st.sampled_from(["loaded", "duplicate", "rejected", "unchanged"]),
        st.booleans(),  # parsed this run
    ),
    max_size=25,
)


@given(manifest_rows)
def test_claims_are_every_row_of_each_contested_identity(rows: list[tuple[str | None, str, bool]]) -> None:
    """ledger.claims against the rule written out: among loaded and duplicate rows, every row of an
    identity URL held by more than one file or by a file marked duplicate, in (URL, path) order."""
    import pyarrow as pa

    from pipeline.warehouse import ledger

    table = [
        ledger.row(f"p{i:02d}.md", 1, 7, "s", status, "r", article_id=url) for i, (url, status, _) in enumerate(rows)
    ]
    parsed = {f"p{i:02d}.md" for i, (_, _, was) in enumerate(rows) if was}
    claiming = [r for r in table if r["status"] in ("loaded", "duplicate")]
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for r in claiming:
        groups.setdefault(r["article_id"], []).append(r)
    contested = {u for u, g in groups.items() if len(g) > 1 or any(r["status"] == "duplicate" for r in g)}
    expected = sorted(
        ({**r, "_parsed": r["source_path"] in parsed} for r in claiming if r["article_id"] in contested),
        key=lambda r: (r["article_id"] is None, r["article_id"] or "", r["source_path"]),
    )
    got = ledger.claims(ledger.to_table(table), pa.table({"source_path": pa.array(sorted(parsed), pa.string())}))
    assert [(r["article_id"], r["source_path"], r["status"], r["_parsed"]) for r in got] == [
        (r["article_id"], r["source_path"], r["status"], r["_parsed"]) for r in expected
    ]


listings = st.dictionaries(
    st.sampled_from([f"f{i:02d}.md" for i in range(12)]), st.tuples(st.integers(1, 3), st.integers(1, 3)), max_size=12
)


@given(listings, listings, st.randoms(use_true_random=False))
def test_plan_reads_new_and_changed_files_in_path_order_whatever_the_listing_order(
    previous: dict[str, tuple[int, int]], listed: dict[str, tuple[int, int]], rnd: Any
) -> None:
    """ledger.plan against the rule written out, on a listing in any order (the plan does not sort it):
    keep the previous rows whose size and mtime match, read the rest in path order, count the gone."""
    import pyarrow as pa

    from pipeline.read.discover import FOUND_SCHEMA
    from pipeline.warehouse import ledger

    names = sorted(previous)  # the previous manifest, in path order: row positions
    prev = ledger.to_table([ledger.row(p, *previous[p], "s", "loaded", "r", article_id=p) for p in names])
    rows = list(listed.items())
    rnd.shuffle(rows)
    nulls = pa.nulls(len(rows), pa.string())
    listing = {"source_path": [p for p, _ in rows], "size": [s for _, (s, _) in rows]}
    listing |= {"mtime_ns": [m for _, (_, m) in rows], "_target": nulls, "etag": nulls}
    disc = pa.table(listing, schema=FOUND_SCHEMA)
    kept, to_read, deleted, unlisted_kept = ledger.plan(prev, disc, [], [], 10**6)
    assert sorted(kept.column("_row").to_pylist()) == [i for i, p in enumerate(names) if listed.get(p) == previous[p]]
    assert to_read.column("_path").to_pylist() == sorted(p for p in listed if listed[p] != previous.get(p))
    assert (deleted, unlisted_kept) == (len(set(previous) - set(listed)), 0)


PATHS = [f"f{i:02d}.md" for i in range(14)]
CARRIED = 4 * 30  # unchanged rows beside at most 12 + 6 + 3 changed ones: below ledger.FEW_CHANGED's share
ledger_states = st.fixed_dictionaries(
    {
        # previous manifest: path -> (status, article id); a published manifest holds an id at most once as loaded
        "prev": st.dictionaries(
            st.sampled_from(PATHS),
            st.tuples(st.sampled_from(["loaded", "duplicate", "rejected"]), st.sampled_from(["a", "b", "c", "d", "e"])),
            max_size=12,
        ),
        "kept": st.sets(st.integers(0, 13)),
        "work": st.dictionaries(
            st.sampled_from(PATHS),
            st.tuples(st.sampled_from(["loaded", "rejected", "unchanged"]), st.sampled_from(["a", "b", "c", None])),
            max_size=6,
        ),
        "decided": st.dictionaries(
            st.sampled_from(PATHS), st.sampled_from(["rejected", "duplicate", "loaded"]), max_size=3
        ),
    }
)


def _ledger_inputs(state: dict[str, Any]) -> tuple[Any, Any, Any, Any, Any]:
    import pyarrow as pa

    from pipeline.warehouse import ledger

    prev_rows, seen = [], set()
    for path in sorted(state["prev"]):
        status, url = state["prev"][path]
        if status == "loaded" and url in seen:
            status = "duplicate"
        seen |= {url} if status == "loaded" else set()
        prev_rows.append(ledger.row(path, 1, 1, f"s-{path}", status, "r0", article_id=url, partition="2024-01"))
    # Files no run touches, so that the changed rows are few (as on a usual day) and the lookups by
    # changed paths are used (``ledger.FEW_CHANGED``).
    carried = [ledger.row(f"z{i:03d}.md", 1, 1, "s", "loaded", "r0", article_id=f"u{i}") for i in range(CARRIED)]
    prev = ledger.to_table(prev_rows + carried)
    chosen = {i for i in state["kept"] if i < len(prev_rows)} | set(range(len(prev_rows), prev.num_rows))
    kept = pa.table({"_row": pa.array(sorted(chosen), pa.int64())})
    work = ledger.to_table(
        [
            ledger.row(
                p, 2, 3, f"t-{p}", status, "r1", article_id=None if status == "unchanged" else url, partition="2024-02"
            )
            for p, (status, url) in sorted(state["work"].items())
        ]
    )
    decided = ledger.to_table(
        [ledger.row(p, 4, 5, "d", status, "r1", article_id="a") for p, status in sorted(state["decided"].items())]
    )
    parsed = ledger.parsed_paths(work, [])
    return prev, kept, work, decided, parsed


@given(ledger_states)
def test_rebuild_names_every_path_whose_row_may_change(state: dict[str, Any]) -> None:
    """ledger.rebuild's changed paths against their meaning: every previous path outside them has the
    very same row in the new manifest, which is ``ledger.manifest``'s."""
    from pipeline.warehouse import ledger

    prev, kept, work, decided, _ = _ledger_inputs(state)
    m, changed = ledger.rebuild(kept, prev, work, decided)
    assert m.to_pylist() == ledger.manifest(kept, prev, work, decided).to_pylist()
    before = {r["source_path"]: r for r in prev.to_pylist()}
    after = {r["source_path"]: r for r in m.to_pylist()}
    assert changed is not None  # few: at most 21 of the 120-odd rows
    unchanged = set(before) - set(changed.to_pylist())
    assert len(unchanged) >= CARRIED
    for path in unchanged:
        assert after.get(path) == before[path]


@given(ledger_states)
def test_dead_and_claims_over_the_changed_rows_alone_match_the_whole_manifest(state: dict[str, Any]) -> None:
    """Given the changed paths, ``dead`` and ``claims`` look at those rows alone: the same answers."""
    from pipeline.warehouse import ledger

    prev, kept, work, decided, parsed = _ledger_inputs(state)
    m, changed = ledger.rebuild(kept, prev, work, decided)
    assert sorted(ledger.dead(prev, m, parsed, changed)) == sorted(ledger.dead(prev, m, parsed))
    assert ledger.claims(m, parsed, changed) == ledger.claims(m, parsed)
