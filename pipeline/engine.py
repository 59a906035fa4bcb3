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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from . import assemble, checks, schema, store
from .catalog import build_catalog, catalog_snapshot_id
from .config import Settings
from .discover import discover
from .errors import ChecksFailed
from .problems import Problem
from .work import Job, Outcome, Parser

FAULT_KILL_ENV = "PIPELINE_FAULT_KILL_AT"  # test hook: SIGKILL this process at a named point
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
    previous: store.Snapshot | None = None
    lock: Any = None
    build_dir: str = ""
    staging: str = ""
    prev_manifest: dict[str, dict[str, Any]] = field(default_factory=dict)
    manifest: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)
    parsed: set[str] = field(default_factory=set)
    staging_files: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    new_unknown_keys: list[str] = field(default_factory=list)
    snapshot: store.Snapshot | None = None
    dead: set[str] = field(default_factory=set)
    losers: set[str] = field(default_factory=set)
    touched: set[str] = field(default_factory=set)

    # --- stages ------------------------------------------------------------
    def prepare(self) -> None:
        """Take the lock, clear debris of killed runs, repair a stale catalog."""
        s = self.settings
        self.lock = store.acquire_lock(s.warehouse, s.wait_seconds)
        self.started_at = self.clock()
        store.clean_staging(s.warehouse)
        self.previous = store.read_current(s.warehouse)
        self.staging = store.staging_dir(s.warehouse, self.run_id)
        self.build_dir = os.path.join(self.staging, "snapshot")
        os.makedirs(os.path.join(self.staging, "parse"))
        if self.previous is not None:
            shown = catalog_snapshot_id(s.warehouse)
            if shown != self.previous.id:  # a run died between commit and catalog rebuild
                if shown:
                    store.retire(s.warehouse, {shown})
                build_catalog(s.warehouse, self.previous, self.staging)
            manifest = pq.read_table(self.previous.table_files("source_files"))
            self.prev_manifest = {r["source_path"]: r for r in manifest.to_pylist()}

    def plan(self) -> None:
        """Discover files and decide which must be read: new, or size/mtime changed."""
        t0 = time.perf_counter()
        found, refused = discover(self.settings.seeds, self.settings.patterns)
        prev = self.prev_manifest
        for item in refused:
            old = prev.get(item.rel)
            if old and old["status"] == "rejected" and old["reason"] == item.problem.reason:
                self.manifest[item.rel] = old  # refused again for the same reason: unchanged
                continue
            self.manifest[item.rel] = _row(item.rel, None, None, None, "rejected", self.run_id, problem=item.problem)
            self.parsed.add(item.rel)
        for f in found:
            old = prev.get(f.rel)
            if old and old["size"] == f.size and old["mtime_ns"] == f.mtime_ns and not self._retry(old):
                # Same size and mtime: not even opened (also files refused unread, e.g. over the size cap).
                self.manifest[f.rel] = old
            else:
                old_sha = old["source_sha256"] if old else None
                self.jobs.append(Job(f.rel, f.path, f.size, f.mtime_ns, old_sha))
        self.counts["files_seen"] = len(found) + len(refused)
        self.counts["files_deleted"] = len(set(prev) - {f.rel for f in found} - {r.rel for r in refused})
        self.timings["plan"] = time.perf_counter() - t0

    def _retry(self, old: dict[str, Any]) -> bool:
        """Rejects that a changed setting or permission may fix although the file did not change."""
        if old["status"] != "rejected":
            return False
        if old["reason"] == "unreadable":
            return True
        return old["reason"] == "too_large" and old["size"] <= self.settings.max_file_bytes

    def parse(self, jobs: list[Job] | None = None, progress: Progress | None = None) -> None:
        """Read, hash and parse the planned files on worker processes."""
        t0 = time.perf_counter()
        jobs = self.jobs if jobs is None else jobs
        if not jobs:
            return
        s = self.settings
        size = max(1, min(s.batch_size, -(-len(jobs) // (s.workers * 4))))
        batches = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        parser = Parser(s.workers, os.path.join(self.staging, "parse"), self.run_id, s.max_file_bytes)
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(done, len(jobs))

        for result in parser.run(batches, tick):
            for o in result.outcomes:
                self._record(o)
            for table, path in result.staging.items():
                self.staging_files.setdefault(table, []).append(path)
        self.timings["parse"] = self.timings.get("parse", 0.0) + time.perf_counter() - t0

    def _record(self, o: Outcome) -> None:
        old = self.prev_manifest.get(o.rel)
        if o.status == "unchanged" and old is not None:
            self.manifest[o.rel] = {**old, "mtime_ns": o.mtime_ns, "size": o.size}
            return
        self.parsed.add(o.rel)
        self.manifest[o.rel] = _row(
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

    def resolve(self, progress: Progress | None = None) -> None:
        """One article per identity URL; work out which old rows die and which months change."""
        for _ in range(5):
            promoted = self._dedupe()
            if not promoted:
                break
            jobs = [
                Job(r, os.path.join(self.settings.seeds, r), -1, self.manifest[r]["mtime_ns"], None) for r in promoted
            ]
            for job in jobs:
                self.manifest.pop(job.rel)
            self.parse(jobs, progress)
        prev, now = self.prev_manifest, self.manifest
        for rel, old in prev.items():
            if old["status"] != "loaded":
                continue
            new = now.get(rel)
            if new is None or rel in self.parsed or new["status"] != "loaded":
                self.dead.add(old["article_id"])
                self.touched.add(old["partition"])
        for rel in self.parsed:
            row = now[rel]
            if row["status"] == "loaded":
                self.touched.add(row["partition"])
            else:
                self.losers.add(rel)

    def _dedupe(self) -> list[str]:
        """Smallest path wins an identity URL; returns winners that need parsing."""
        claims: dict[str, list[str]] = {}
        for rel, row in self.manifest.items():
            if row["status"] in ("loaded", "duplicate"):
                claims.setdefault(row["article_id"], []).append(rel)
        promoted = []
        for rels in claims.values():
            rels.sort(key=lambda r: r.encode("utf-8", "surrogateescape"))
            winner = rels[0]
            if self.manifest[winner]["status"] == "duplicate":
                if winner not in self.parsed:
                    promoted.append(winner)  # its rows exist nowhere yet: parse it
                    continue
                self.manifest[winner] = {**_strip_problem(self.manifest[winner]), "status": "loaded"}
            for rel in rels[1:]:
                problem = Problem(
                    "duplicate",
                    "duplicate_identity",
                    f"same identity URL as {winner!r}, which is loaded (the smallest path wins); "
                    "give this article its own webUrl or delete one of the files",
                    field="webUrl",
                )
                self.manifest[rel] = {**self.manifest[rel], "status": "duplicate", **_problem_cols(problem)}
        return promoted

    def build(self) -> None:
        """Write every table of the next snapshot into the build folder."""
        t0 = time.perf_counter()
        s = self.settings
        os.makedirs(self.build_dir)
        con = assemble.connect(os.path.join(self.staging, "duckdb_tmp"), s.memory_limit)
        con.execute("CREATE TEMP TABLE dead AS SELECT unnest(?::VARCHAR[]) AS article_id", [sorted(self.dead)])
        con.execute("CREATE TEMP TABLE losers AS SELECT unnest(?::VARCHAR[]) AS rel", [sorted(self.losers)])
        files: dict[str, list[str]] = {}
        for table in schema.DOCUMENT_TABLES:
            out = os.path.join(self.build_dir, table.name)
            files[table.name] = assemble.merge_partitioned(
                con, table, self.previous, self.staging_files.get(table.name, []), self.touched, out
            )
            fault_point(f"after_{table.name}")
        path = lambda t: [os.path.join(self.build_dir, t, f) for f in files[t]]  # noqa: E731
        changed = bool(self.dead or self.parsed)
        if changed or self.previous is None:
            providers = assemble.derive_providers(con, path("articles"), path("related_articles"))
        else:
            providers = pq.read_table(self.previous.table_files("providers"))
        con.close()
        self._count(files, providers)
        small = {
            "providers": providers,
            "source_files": self._manifest_table(),
            "rejects": self._rejects_table(),
            "unknown_keys": self._unknown_keys_table(),
        }
        small["load_runs"] = self._load_runs_table()
        for name, data in small.items():
            table = schema.table(name)
            os.makedirs(os.path.join(self.build_dir, name))
            assemble.write_table(os.path.join(self.build_dir, name, assemble.DATA_FILE), table, data)
            files[name] = [assemble.DATA_FILE]
        self.files = files
        self.timings["build"] = time.perf_counter() - t0

    def check(self) -> None:
        """Post-load checks on the built snapshot; any failure keeps the old snapshot."""
        t0 = time.perf_counter()
        failures = checks.run_checks(self.build_dir, self.files, self.counts)
        self.timings["check"] = time.perf_counter() - t0
        if failures:
            raise ChecksFailed("post-load checks failed, previous snapshot kept: " + "; ".join(failures))

    def publish(self) -> store.Snapshot:
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
        snap = store.seal_snapshot(self.build_dir, s.warehouse, meta)
        visible = {x for x in (self.previous.id if self.previous else None, catalog_snapshot_id(s.warehouse)) if x}
        store.retire(s.warehouse, visible)
        fault_point("before_commit")
        store.commit(s.warehouse, snap)
        fault_point("after_commit")
        build_catalog(s.warehouse, snap, self.staging)
        self.snapshot = snap
        store.collect_garbage(s.warehouse, {snap.id}, s.gc_grace_seconds)
        self.timings["publish"] = time.perf_counter() - t0
        return snap

    def fail(self, exc: BaseException) -> None:
        """Record why this run failed (only when it held the lock: a locked-out run did nothing)."""
        if self.lock is not None:
            message = " ".join(str(exc).split()) or type(exc).__name__
            store.record_failure(self.settings.warehouse, self.run_id, self.clock().isoformat(), message)

    def close(self) -> None:
        """Remove this run's staging folder and release the lock (also after failures)."""
        if self.staging:
            shutil.rmtree(self.staging, ignore_errors=True)
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # --- derived tables ----------------------------------------------------
    def _count(self, files: dict[str, list[str]], providers: pa.Table) -> None:
        for table in schema.DOCUMENT_TABLES:
            self.rows[table.name] = assemble.count_rows(
                [os.path.join(self.build_dir, table.name, f) for f in files[table.name]]
            )
        self.rows["providers"] = providers.num_rows
        statuses = [r["status"] for r in self.manifest.values()]
        prev = self.prev_manifest
        new = sum(1 for r in self.parsed if r not in prev)
        changed = sum(
            1 for r in self.parsed if r in prev and prev[r]["source_sha256"] != self.manifest[r]["source_sha256"]
        )
        self.counts.update(
            files_loaded=statuses.count("loaded"),
            files_rejected=statuses.count("rejected"),
            files_duplicate=statuses.count("duplicate"),
            files_parsed=len(self.parsed),
            files_new=new,
            files_changed=changed,
            files_unchanged=sum(
                1
                for r, row in self.manifest.items()
                if r not in self.parsed or (r in prev and prev[r]["source_sha256"] == row["source_sha256"])
            ),
        )

    def _manifest_table(self) -> pa.Table:
        rows = [self.manifest[k] for k in sorted(self.manifest, key=lambda r: r.encode("utf-8", "surrogateescape"))]
        return pa.Table.from_pylist(rows, schema=schema.table("source_files").arrow_schema())

    def _rejects_table(self) -> pa.Table:
        cols = schema.table("rejects").column_names
        rows = [
            {c: r[c] for c in cols}
            for r in self._manifest_table().to_pylist()
            if r["status"] in ("rejected", "duplicate")
        ]
        return pa.Table.from_pylist(rows, schema=schema.table("rejects").arrow_schema())

    def _unknown_keys_table(self) -> pa.Table:
        first_seen: dict[str, str] = {}
        if self.previous is not None:
            for r in pq.read_table(self.previous.table_files("unknown_keys")).to_pylist():
                first_seen[r["key_path"]] = r["first_seen_run_id"]
        counts: dict[str, int] = {}
        for r in self.manifest.values():
            if r["status"] == "loaded":
                for k in r.get("unknown_keys") or []:
                    counts[k] = counts.get(k, 0) + 1
        self.new_unknown_keys = sorted(k for k in counts if k not in first_seen)
        rows = [
            {"key_path": k, "file_count": counts[k], "first_seen_run_id": first_seen.get(k, self.run_id)}
            for k in sorted(counts)
        ]
        return pa.Table.from_pylist(rows, schema=schema.table("unknown_keys").arrow_schema())

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


def _problem_cols(problem: Problem | None) -> dict[str, Any]:
    if problem is None:
        return {k: None for k in ("stage", "reason", "message", "line", "column", "field")}
    return {
        "stage": problem.stage,
        "reason": problem.reason,
        "message": problem.message,
        "line": problem.line,
        "column": problem.column,
        "field": problem.field,
    }


def _strip_problem(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, **_problem_cols(None)}


def _row(
    rel: str,
    size: int | None,
    mtime_ns: int | None,
    sha: str | None,
    status: str,
    run_id: str,
    article_id: str | None = None,
    partition: str | None = None,
    unknown_keys: list[str] | None = None,
    problem: Problem | None = None,
) -> dict[str, Any]:
    return {
        "source_path": rel,
        "size": size,
        "mtime_ns": mtime_ns,
        "source_sha256": sha,
        "status": status,
        "article_id": article_id,
        "partition": partition,
        "unknown_keys": unknown_keys or [],
        **_problem_cols(problem),
        "run_id": run_id,
    }


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
