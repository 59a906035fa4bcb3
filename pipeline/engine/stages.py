"""The pipeline's stages as plain functions over one ``Run``; the flow and the CLI only wire them.

prepare -> plan -> parse -> resolve -> build -> check -> publish. Nothing is
visible to readers until ``publish`` swaps ``current``; a failure or a kill at
any earlier point leaves the previous snapshot published and untouched.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import Settings
from pipeline.engine.parse import Job, Outcome, Parser, batch_size
from pipeline.errors import ChecksFailed
from pipeline.read.discover import discover
from pipeline.read.problems import Problem
from pipeline.warehouse import checks, commits, merge, schema
from pipeline.warehouse import ledger as manifest
from pipeline.warehouse.catalog import build_catalog, catalog_snapshot_id
from pipeline.warehouse.ledger import Ledger

FAULT_KILL_ENV = "PIPELINE_FAULT_KILL_AT"  # test hook: SIGKILL this process at a named point
FAULT_SLEEP_ENV = "PIPELINE_FAULT_SLEEP_SECONDS"  # test hook: hold the lock this long (overlap tests)
Clock = Callable[[], datetime]
Progress = Callable[[int, int], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


def make_run_id(now: datetime) -> str:
    """Sortable and unique: UTC start time plus a random suffix."""
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(2)


def fault_point(name: str) -> None:
    if os.environ.get(FAULT_KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Run:
    settings: Settings
    run_id: str
    clock: Clock = utc_now
    started_at: datetime | None = None
    previous: commits.Snapshot | None = None
    lock: Any = None
    build_dir: str = ""
    staging: str = ""
    ledger: Ledger | None = None
    to_read: pa.Table | None = None  # planned files: _path, _size, _mtime_ns, _target, _old_sha
    files_parsed: int = 0
    staging_files: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    new_unknown_keys: list[str] = field(default_factory=list)
    snapshot: commits.Snapshot | None = None
    dead: set[str] = field(default_factory=set)
    losers: set[str] = field(default_factory=set)
    touched: set[str] = field(default_factory=set)
    files: dict[str, list[str]] = field(default_factory=dict)
    source_files: pa.Table | None = None
    rejects: pa.Table | None = None
    load_run: dict[str, Any] = field(default_factory=dict)
    manifest_shape: tuple[int, int] = (0, 0)  # (rows, distinct paths) of the new manifest

    # --- stages ------------------------------------------------------------
    def prepare(self) -> None:
        """Take the lock, clear debris of killed runs, repair a stale catalog."""
        s = self.settings
        self.lock = commits.acquire_lock(s.warehouse, s.wait_seconds)
        if os.environ.get(FAULT_SLEEP_ENV):
            time.sleep(float(os.environ[FAULT_SLEEP_ENV]))
        self.started_at = self.clock()
        commits.clean_staging(s.warehouse)
        self.previous = commits.read_current(s.warehouse)
        self.staging = commits.staging_dir(s.warehouse, self.run_id)
        self.build_dir = os.path.join(self.staging, "snapshot")
        os.makedirs(os.path.join(self.staging, "parse"))
        previous_manifest = None
        if self.previous is not None:
            shown = catalog_snapshot_id(s.warehouse)
            if shown != self.previous.id:  # a run died between commit and catalog rebuild
                if shown:
                    commits.retire(s.warehouse, {shown})
                build_catalog(s.warehouse, self.previous, self.staging)
            previous_manifest = pq.read_table(self.previous.table_files("source_files"))
        self.ledger = Ledger(previous_manifest)

    def plan(self) -> None:
        """Discover files and decide which must be read: new, or size/mtime changed."""
        t0 = time.perf_counter()
        s, ledger = self.settings, self._ledger()
        ledger.changes.clear()  # idempotent: the flow retries this stage on transient OSError
        ledger.refused_parsed.clear()
        found, refused = discover(s.seeds, s.patterns)
        columns = list(zip(*found, strict=True)) if found else [(), (), (), ()]
        discovered = pa.Table.from_arrays([pa.array(c) for c in columns], schema=manifest.DISCOVERED)
        del found, columns
        self.to_read, deleted = ledger.plan(discovered, [r.rel for r in refused], s.max_file_bytes)
        for item in refused:
            old = ledger.previous_row(item.rel)
            if old and old["status"] == "rejected" and old["reason"] == item.problem.reason:
                ledger.changes[item.rel] = old  # refused again for the same reason: unchanged
                continue
            ledger.changes[item.rel] = manifest.row(
                item.rel, None, None, None, "rejected", self.run_id, problem=item.problem
            )
            ledger.refused_parsed.append(item.rel)
        self.counts["files_seen"] = discovered.num_rows + len(refused)
        self.counts["files_deleted"] = deleted
        self.timings["plan"] = time.perf_counter() - t0

    def _ledger(self) -> Ledger:
        assert self.ledger is not None, "prepare() first"
        return self.ledger

    def _batches(self, size: int) -> Iterator[list[Job]]:
        """Jobs made a batch at a time from the planned table (a million Job objects would not fit)."""
        assert self.to_read is not None
        seeds = self.settings.seeds
        for chunk in self.to_read.to_batches(max_chunksize=size):
            cols = [c.to_pylist() for c in chunk.columns]
            yield [
                Job(rel, target or os.path.join(seeds, rel), fsize, mtime, old)
                for rel, fsize, mtime, target, old in zip(*cols, strict=True)
            ]

    def parse(self, jobs: list[Job] | None = None, progress: Progress | None = None) -> None:
        """Read, hash and parse the planned files (or ``jobs``) on worker processes."""
        t0 = time.perf_counter()
        s = self.settings
        total = len(jobs) if jobs is not None else (self.to_read.num_rows if self.to_read is not None else 0)
        if not total:
            return
        size = batch_size(total, s.workers, s.batch_size)
        batches: Iterable[list[Job]] = (
            [jobs[i : i + size] for i in range(0, total, size)] if jobs is not None else self._batches(size)
        )
        parser = Parser(s.workers, os.path.join(self.staging, "parse"), self.run_id, s.max_file_bytes)
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(done, total)

        for result in parser.run(batches, tick):
            for o in result.outcomes:
                self._record(o)
            for table, path in result.staging.items():
                self.staging_files.setdefault(table, []).append(path)
        self.timings["parse"] = self.timings.get("parse", 0.0) + time.perf_counter() - t0

    def _record(self, o: Outcome) -> None:
        self._ledger().record(
            manifest.row(
                o.rel,
                o.size,
                o.mtime_ns,
                o.sha,
                o.status,
                self.run_id,
                article_id=o.article_id,
                partition=o.month,
                unknown_keys=list(o.unknown_keys),
                problem=o.problem,
            )
        )

    def resolve(self, progress: Progress | None = None) -> None:
        """One article per identity URL; work out which old rows die and which months change."""
        ledger = self._ledger()
        for _ in range(5):
            promoted = self._dedupe()
            if not promoted:
                break
            seeds = self.settings.seeds
            self.parse([Job(r, os.path.join(seeds, r), -1, mtime, None) for r, mtime in promoted], progress)
        m = ledger.table()
        for article, partition in ledger.dead(m):
            self.dead.add(article)
            self.touched.add(partition)
        touched, losers = ledger.touched_and_losers(m)
        self.touched |= touched
        self.losers.update(losers)
        self.files_parsed = ledger.parsed_count()
        self.source_files = m

    def _dedupe(self) -> list[tuple[str, int]]:
        """Smallest path wins an identity URL; returns (path, mtime_ns) of winners that need parsing."""
        ledger = self._ledger()
        groups: dict[str, list[dict[str, Any]]] = {}
        parsed: dict[str, bool] = {}
        for r in ledger.claims():
            parsed[r["source_path"]] = r.pop("_parsed")
            groups.setdefault(r["article_id"], []).append(r)
        promoted = []
        for rows in groups.values():
            rows.sort(key=lambda r: r["source_path"].encode("utf-8", "surrogateescape"))
            winner = rows[0]
            if winner["status"] == "duplicate":
                if not parsed[winner["source_path"]]:
                    ledger.changes.pop(winner["source_path"], None)  # its parse outcome decides now
                    promoted.append((winner["source_path"], winner["mtime_ns"]))  # its rows exist nowhere yet
                    continue
                ledger.changes[winner["source_path"]] = {
                    **winner,
                    **manifest.problem_columns(None),
                    "status": "loaded",
                }
            for r in rows[1:]:
                problem = Problem(
                    "duplicate",
                    "duplicate_identity",
                    f"same identity URL as {winner['source_path']!r}, which is loaded (the smallest path wins); "
                    "give this article its own webUrl or delete one of the files",
                    field="webUrl",
                )
                ledger.changes[r["source_path"]] = {**r, "status": "duplicate", **manifest.problem_columns(problem)}
        return promoted

    def build(self) -> None:
        """Write every table of the next snapshot into the build folder."""
        t0 = time.perf_counter()
        s, ledger = self.settings, self._ledger()
        assert self.source_files is not None, "resolve() first"
        os.makedirs(self.build_dir)
        con = merge.connect(os.path.join(self.staging, "duckdb_tmp"), s.memory_limit)
        # Plain (not TEMP) tables: the merge threads' cursors must see them.
        con.execute("CREATE TABLE dead AS SELECT unnest(?::VARCHAR[]) AS article_id", [sorted(self.dead)])
        con.execute("CREATE TABLE losers AS SELECT unnest(?::VARCHAR[]) AS rel", [sorted(self.losers)])
        files: dict[str, list[str]] = {}
        per_month = ledger.articles_per_month(self.source_files)
        groups = merge.month_groups(self.touched, per_month, merge.MERGE_ARTICLES)

        def merge_table(table: schema.Table) -> list[str]:
            cursor = con.cursor()  # one connection per thread; DuckDB and Parquet writes release the GIL
            try:
                out = os.path.join(self.build_dir, table.name)
                staging = self.staging_files.get(table.name, [])
                return merge.merge_partitioned(cursor, table, self.previous, staging, groups, out)
            finally:
                cursor.close()

        with ThreadPoolExecutor(max_workers=max(1, min(2, s.workers))) as pool:
            for table, names in zip(schema.DOCUMENT_TABLES, pool.map(merge_table, schema.DOCUMENT_TABLES), strict=True):
                files[table.name] = names
                fault_point(f"after_{table.name}")
        path = lambda t: [os.path.join(self.build_dir, t, f) for f in files[t]]  # noqa: E731
        if self.dead or self.files_parsed or self.previous is None:
            providers = merge.derive_providers(con, path("articles"), path("related_articles"))
        else:
            providers = pq.read_table(self.previous.table_files("providers"))
        con.close()
        for table in schema.DOCUMENT_TABLES:
            self.rows[table.name] = merge.count_rows(path(table.name))
        self.rows["providers"] = providers.num_rows
        counted = ledger.counts(self.source_files)
        self.manifest_shape = (counted.pop("manifest_rows"), counted.pop("manifest_paths"))
        self.counts.update(counted)
        self.counts["files_parsed"] = self.files_parsed
        previous_keys = pq.read_table(self.previous.table_files("unknown_keys")) if self.previous else None
        unknown = ledger.unknown_keys(self.source_files, previous_keys, self.run_id)
        known = set(previous_keys.column("key_path").to_pylist()) if previous_keys is not None else set()
        self.new_unknown_keys = sorted(set(unknown.column("key_path").to_pylist()) - known)
        self.rejects = manifest.rejects(self.source_files)
        small = {
            "providers": providers,
            "source_files": self.source_files,
            "rejects": self.rejects,
            "unknown_keys": unknown,
            "load_runs": self._load_runs_table(),
        }
        for name, data in small.items():
            table = schema.table(name)
            os.makedirs(os.path.join(self.build_dir, name))
            merge.write_table(os.path.join(self.build_dir, name, merge.DATA_FILE), table, data)
            files[name] = [merge.DATA_FILE]
        self.files = files
        self.timings["build"] = time.perf_counter() - t0

    def check(self) -> None:
        """Post-load checks on the built snapshot; any failure keeps the old snapshot."""
        t0 = time.perf_counter()
        failures = checks.run_checks(self.build_dir, self.files, self.counts, self.manifest_shape)
        self.timings["check"] = time.perf_counter() - t0
        if failures:
            raise ChecksFailed("post-load checks failed, previous snapshot kept: " + "; ".join(failures))

    def publish(self) -> commits.Snapshot:
        """Seal, commit (atomic), rebuild the catalog, collect garbage."""
        t0 = time.perf_counter()
        s = self.settings
        meta = {
            "id": self.run_id,
            "run_id": self.run_id,
            "parent": self.previous.id if self.previous else None,
            "files": self.files,
            "rows": self.rows,
        }
        snap = commits.seal_snapshot(self.build_dir, s.warehouse, meta)
        visible = {x for x in (self.previous.id if self.previous else None, catalog_snapshot_id(s.warehouse)) if x}
        commits.retire(s.warehouse, visible)
        fault_point("before_commit")
        commits.commit(s.warehouse, snap)
        fault_point("after_commit")
        build_catalog(s.warehouse, snap, self.staging)
        self.snapshot = snap
        commits.collect_garbage(s.warehouse, {snap.id}, s.gc_grace_seconds)
        self.timings["publish"] = time.perf_counter() - t0
        return snap

    def fail(self, exc: BaseException) -> None:
        """Record why this run failed (only when it held the lock: a locked-out run did nothing)."""
        if self.lock is not None:
            message = " ".join(str(exc).split()) or type(exc).__name__
            commits.record_failure(self.settings.warehouse, self.run_id, self.clock().isoformat(), message)

    def close(self) -> None:
        """Remove this run's staging folder and release the lock (also after failures)."""
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None
        if self.staging:
            shutil.rmtree(self.staging, ignore_errors=True)
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def rejected_rows(self) -> list[dict[str, Any]]:
        return self.rejects.to_pylist() if self.rejects is not None else []

    def _load_runs_table(self) -> pa.Table:
        previous = pq.read_table(self.previous.table_files("load_runs")).to_pylist() if self.previous else []
        assert self.started_at is not None
        row: dict[str, Any] = {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "finished_at": self.clock(),
            "status": "completed",
            "seeds_dir": self.settings.seeds,
            **self.counts,
            **{f"rows_{t}": n for t, n in self.rows.items()},
            "new_unknown_keys": self.new_unknown_keys,
            "snapshot_id": self.run_id,
        }
        self.load_run = row
        return pa.Table.from_pylist(previous + [row], schema=schema.table("load_runs").arrow_schema())


def run_all(settings: Settings, run_id: str, clock: Clock = utc_now, progress: Progress | None = None) -> Run:
    """Every stage in order, without an orchestrator (tests, benchmarks, library use)."""
    run = Run(settings.resolved(), run_id, clock)
    try:
        run.prepare()
        run.plan()
        run.parse(progress=progress)
        run.resolve(progress)
        run.build()
        run.check()
        run.publish()
    except BaseException as exc:
        run.fail(exc)
        raise
    finally:
        run.close()
    return run
