"""The pipeline's stages: plain functions over frozen values; the flow and the CLI only wire them.

    open_run -> plan -> parse -> resolve -> build -> check -> publish -> close_run

Each stage takes the ``State`` so far and returns a new one with its own output added
(frozen dataclasses: nothing is mutated in place, every input is explicit). What runs
in parallel (parse batches, merges) goes to a ``Fanout`` as small picklable specs.
``STAGES`` is the one list of stages and ``run_all`` the one loop over it: ``--orchestrator
none`` calls it as it is, the Prefect flow with its own fan-out, reporter and a step that runs
each stage as a task. Nothing is visible to readers until ``publish`` commits.
"""

from __future__ import annotations

import contextvars
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import faults, schema
from pipeline.config import Settings
from pipeline.engine.fanout import Fanout, local_or_dask
from pipeline.engine.parse import BatchResult, BatchSpec, Job, Outcome, batch_size
from pipeline.errors import ChecksFailed, ConfigError, PipelineError, StageFailed, WarehouseLocked
from pipeline.progress import Reporter
from pipeline.read.discover import discover
from pipeline.read.problems import duplicate_identity, path_order
from pipeline.report import bounded_list
from pipeline.storage.failures import transient
from pipeline.storage.location import Location
from pipeline.warehouse import checks, commits, delta, ledger, merge, tables
from pipeline.warehouse import retention as retention_gc
from pipeline.warehouse.catalog import show
from pipeline.warehouse.commits import Snapshot, WriterLock

Clock = Callable[[], datetime]
OUTCOME_CHUNK = 20_000  # parsed outcomes are compacted into Arrow in chunks of this size
# How many times resolve re-reads the new winners of contested identity URLs. A round promotes files
# that lost their URL before and win it now (they have no staged rows, so they must be parsed). A
# re-read file normally keeps its URL and the next round finds nothing to do; another round is needed
# only when a re-read changes the contest (the file no longer parses, or holds another URL now). Five
# bounds a pathological chain; a URL still contested after them fails the unique-key check, so
# nothing wrong is published.
PROMOTION_ROUNDS = 5
# Re-reads number their parse batches from round x this, apart from the first parse's batch numbers
# (a run parses far fewer than a million batches), so their staging files never share a name.
REREAD_BATCH_BASE = 1_000_000


def utc_now() -> datetime:
    return datetime.now(UTC)


def make_run_id(now: datetime) -> str:
    """Sortable and unique: UTC start time plus a random suffix."""
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(2)


# --- frozen stage outputs ------------------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """What every stage may read and nothing changes: settings, where things are, the previous snapshot."""

    settings: Settings
    seeds: Location
    warehouse: Location
    run_id: str
    started_at: datetime
    staging: Location
    previous: Snapshot | None


@dataclass(frozen=True)
class Plan:
    previous: pa.Table  # the previous manifest (source_files), empty before the first run
    to_read: pa.Table  # _path, _size, _mtime_ns, _target, _etag, _old_sha
    kept: pa.Table  # positions (_row) of the previous manifest's rows still valid as they are
    decided: pa.Table  # manifest rows fixed without reading: refusals and unlisted folders
    refused_read: tuple[str, ...]  # refused for a new reason: counted as read
    unlisted: tuple[str, ...]  # folders/prefixes that could not be listed ('sub/')
    counts: Mapping[str, int]


@dataclass(frozen=True)
class Parsed:
    outcomes: pa.Table  # manifest rows of the files read (status loaded, rejected or unchanged)
    staging: Mapping[str, tuple[str, ...]]  # table -> staging file URLs


@dataclass(frozen=True)
class Resolved:
    manifest: pa.Table  # the new source_files
    parsed: Parsed  # including winners of identity URLs promoted from duplicate
    parsed_paths: pa.Table
    dead: tuple[str, ...]  # article ids whose old rows go
    losers: tuple[str, ...]  # parsed files whose rows must not be merged
    touched: tuple[str, ...]  # months that gain or lose rows


@dataclass(frozen=True)
class Built:
    files: Mapping[str, tuple[tuple[str, int], ...]]  # table -> (data file, rows)
    rows: Mapping[str, int]
    counts: Mapping[str, int]
    manifest_shape: tuple[int, int]  # (rows, distinct paths) of the new manifest
    new_unknown_keys: tuple[str, ...]
    load_run: Mapping[str, Any]
    rejects: pa.Table


@dataclass(frozen=True)
class State:
    ctx: RunContext
    plan: Plan | None = None
    parsed: Parsed | None = None
    resolved: Resolved | None = None
    built: Built | None = None
    snapshot: Snapshot | None = None
    lake: delta.Published | None = None  # the Delta commits that followed the snapshot
    warnings: tuple[str, ...] = ()  # follow-up steps after the commit that did not complete
    timings: Mapping[str, float] = field(default_factory=dict)

    def need(self, name: str) -> Any:
        value = getattr(self, name)
        if value is None:
            raise PipelineError(f"internal error: stage output {name!r} is missing (stages run out of order)")
        return value

    def timed(self, stage: str, t0: float, **changes: Any) -> State:
        spent = dict(self.timings)
        spent[stage] = spent.get(stage, 0.0) + time.perf_counter() - t0
        return replace(self, timings=spent, **changes)


@dataclass
class Services:
    """Live things a run uses that are not data: the fan-out engine, the writer lock, progress, the clock."""

    fanout: Fanout
    lock: WriterLock
    clock: Clock = utc_now
    reporter: Reporter = field(default_factory=Reporter)


# --- open and close ----------------------------------------------------------------------------


def use_system_allocator() -> None:
    """Arrow allocates through the C library's malloc, which hands large freed blocks back at once.

    Arrow's default (mimalloc) keeps freed pages for reuse: a run frees hundreds of MB of Arrow
    data between stages while DuckDB holds its own budget, and the peak RSS of a 100k load was
    ~15% higher with it (same speed).
    """
    pa.set_memory_pool(pa.system_memory_pool())


def open_run(settings: Settings, run_id: str, clock: Clock = utc_now) -> tuple[RunContext, WriterLock]:
    """Take the writer lock, clear debris of killed runs, repair what readers see, find the previous snapshot."""
    use_system_allocator()
    settings = settings.resolved()
    seeds, wh = settings.seeds_location(), settings.warehouse_location()
    lock = commits.acquire(wh, run_id, settings.wait_seconds, settings.lease_seconds)
    try:
        faults.sleep_holding_lock()
        started_at = clock()
        commits.clean_staging(wh)
        staging = commits.staging(wh, run_id)
        previous = commits.read_newest(wh)
        if previous is not None:
            show(wh, previous, tables.scratch_dir(staging), only_if_stale=True)
    except BaseException:
        lock.release()
        raise
    return RunContext(settings, seeds, wh, run_id, started_at, staging, previous), lock


def record_failure(ctx: RunContext, exc: BaseException, clock: Clock = utc_now) -> None:
    """Remember why this run failed (only runs that held the lock get here).

    Not when the lock was lost (``WarehouseLocked``, e.g. an expired lease taken over): the
    warehouse is the winner's now, and a failure record would be written over its state.
    """
    cause = exc.cause if isinstance(exc, StageFailed) else exc
    if isinstance(cause, WarehouseLocked):
        return
    message = " ".join(str(exc).split()) or type(exc).__name__
    try:
        stage = exc.stage if isinstance(exc, StageFailed) else None
        commits.record_failure(ctx.warehouse, ctx.run_id, clock().isoformat(), message, stage)
    except OSError:
        pass  # the storage itself failed; the error the user sees says so


def close_run(ctx: RunContext | None, lock: WriterLock | None) -> None:
    """Remove this run's staging area and release the lock (also after failures)."""
    try:
        if ctx is not None:
            tables.remove_scratch(ctx.staging)
            ctx.staging.delete_tree("")
    finally:
        if lock is not None:
            lock.release()


# --- plan ------------------------------------------------------------------------------------


def plan(state: State, services: Services) -> State:
    """Discover files and decide which must be read: new, or size and ETag/mtime changed."""
    t0 = time.perf_counter()
    ctx = state.ctx
    prev = _previous_manifest(ctx)
    found = discover(ctx.seeds, ctx.settings.patterns, services.fanout.helpers() if ctx.seeds.local else None)
    if not ctx.seeds.local and not (found.count or found.refused or found.unlisted):
        raise ConfigError(
            f"{ctx.seeds.url} holds no objects: check the URL (an empty prefix is refused, "
            "so that a typo never empties the warehouse)"
        )
    discovered = found.table(ordered=False)  # ledger.plan orders what it returns
    unlisted = [u.rel for u in found.unlisted]
    kept, to_read, deleted, unlisted_kept = ledger.plan(
        prev, discovered, [r.rel for r in found.refused], unlisted, ctx.settings.max_file_bytes
    )
    decided, refused_read = [], []
    previous = {r["source_path"]: r for r in _previous_rows(prev, [r.rel for r in found.refused + found.unlisted])}
    for item in found.refused + found.unlisted:
        old = previous.get(item.rel)
        if old and old["status"] == "rejected" and old["reason"] == item.problem.reason:
            decided.append(old)  # refused again for the same reason: unchanged
            continue
        decided.append(ledger.row(item.rel, None, None, None, "rejected", ctx.run_id, problem=item.problem))
        refused_read.append(item.rel)
    counts = {
        "files_seen": discovered.num_rows + len(found.refused) + len(found.unlisted),
        "files_deleted": deleted,
        "files_unlisted": unlisted_kept,
    }
    out = Plan(prev, to_read, kept, ledger.to_table(decided), tuple(refused_read), tuple(unlisted), counts)
    return state.timed("plan", t0, plan=out)


def _previous_manifest(ctx: RunContext) -> pa.Table:
    if ctx.previous is None:
        return ledger.empty()
    return ledger.conform(tables.read(ctx.previous, "source_files"), schema.SOURCE_FILES)


def _previous_rows(prev: pa.Table, paths: list[str]) -> list[dict[str, Any]]:
    if not paths or not prev.num_rows:
        return []
    import pyarrow.compute as pc

    return prev.filter(pc.is_in(prev.column("source_path"), pa.array(paths, pa.string()))).to_pylist()


# --- parse -----------------------------------------------------------------------------------


def _specs(ctx: RunContext, to_read: pa.Table, size: int, first: int = 0) -> Iterator[BatchSpec]:
    """Batches made one at a time from the planned table (a million Job objects would not fit)."""
    s = ctx.settings
    folder = ctx.staging.child("parse")
    for n, chunk in enumerate(to_read.to_batches(max_chunksize=size), start=first):
        cols = [c.to_pylist() for c in chunk.columns]
        jobs = tuple(
            Job(rel, fsize, mtime, etag, target, old)
            for rel, fsize, mtime, target, etag, old in zip(*cols, strict=True)
        )
        yield BatchSpec(n, jobs, ctx.seeds, folder, ctx.run_id, s.max_file_bytes)


def _outcome_row(o: Outcome, run_id: str) -> dict[str, Any]:
    return ledger.row(
        o.rel,
        o.size,
        o.mtime_ns,
        o.sha,
        o.status,
        run_id,
        article_id=o.article_id,
        partition=o.month,
        unknown_keys=o.unknown_keys,
        problem=o.problem,
        etag=o.etag,
    )


def _parse_table(ctx: RunContext, to_read: pa.Table, services: Services, first_batch: int = 0) -> Parsed:
    """Outcomes compacted into Arrow as they arrive (memory grows with the change, not per-file objects)."""
    total = to_read.num_rows
    chunks: list[pa.Table] = []
    pending: list[dict[str, Any]] = []
    staged: dict[str, list[str]] = {}
    if total:
        s = ctx.settings
        size = batch_size(total, s.workers, s.batch_size)
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            services.reporter.parsed(done, total)

        result: BatchResult
        for result in services.fanout.parse(_specs(ctx, to_read, size, first_batch), tick):
            services.lock.check()  # a run that lost its lease stops here, not after the whole parse
            pending.extend(_outcome_row(o, ctx.run_id) for o in result.outcomes)
            if len(pending) >= OUTCOME_CHUNK:
                chunks.append(ledger.to_table(pending))
                pending = []
            for table, files in result.staging.items():
                staged.setdefault(table, []).extend(files)
    chunks.append(ledger.to_table(pending))
    return Parsed(pa.concat_tables(chunks), {t: tuple(f) for t, f in staged.items()})


def parse(state: State, services: Services) -> State:
    """Read, hash and parse the planned files on the fan-out engine; rows go to staging Parquet."""
    t0 = time.perf_counter()
    planned: Plan = state.need("plan")
    parsed = _parse_table(state.ctx, planned.to_read, services)
    done = replace(planned, to_read=planned.to_read.slice(0, 0))  # read: its memory goes back
    return state.timed("parse", t0, parsed=parsed, plan=done)


# --- resolve ---------------------------------------------------------------------------------


def resolve(state: State, services: Services) -> State:
    """One article per identity URL (the smallest path wins); which old rows die and which months change."""
    t0 = time.perf_counter()
    ctx, planned = state.ctx, state.need("plan")
    parsed: Parsed = state.need("parsed")
    prev = planned.previous
    decided = {r["source_path"]: r for r in planned.decided.to_pylist()}

    held: list[str] = []

    def settle(parsed: Parsed) -> tuple[pa.Table, pa.Table, pa.Array | None]:
        """Parsed paths, the manifest, and the paths whose rows it does not carry from ``prev``."""
        work, held[:] = ledger.keep_published(parsed.outcomes, prev)
        paths = ledger.parsed_paths(work, list(planned.refused_read))
        m, changed = ledger.rebuild(planned.kept, prev, work, ledger.to_table(list(decided.values())))
        return paths, m, changed

    parsed_paths, m, changed = settle(parsed)
    for round_no in range(1, PROMOTION_ROUNDS + 1):
        claims = ledger.claims(m, parsed_paths, changed)
        if not claims:
            break  # no identity URL is contested
        decisions, promoted = _dedupe(claims)
        for path, row in decisions.items():
            if row is None:
                decided.pop(path, None)  # promoted: its parse outcome decides now
            else:
                decided[path] = row
        if promoted:
            parsed = _reread(ctx, parsed, promoted, services, round_no)
        parsed_paths, m, changed = settle(parsed)
        if not promoted:
            break
    dead_rows = ledger.dead(prev, m, parsed_paths, changed)
    touched, losers = ledger.touched_and_losers(m, parsed_paths)
    touched |= {p for _, p in dead_rows}
    out = Resolved(
        m,
        Parsed(parsed.outcomes.slice(0, 0), parsed.staging),  # the outcomes live on in the manifest
        parsed_paths,
        tuple(sorted({a for a, _ in dead_rows})),
        tuple(sorted(losers)),
        tuple(sorted(touched)),
    )
    return state.timed("resolve", t0, resolved=out, parsed=out.parsed, warnings=state.warnings + _held_warning(held))


def _held_warning(held: list[str]) -> tuple[str, ...]:
    if not held:
        return ()
    return (
        f"{len(held):,} changed file(s) could not be read; their previous versions stay published "
        f"(the next run retries): {bounded_list(held)}",
    )


Promoted = tuple[str, int, str | None]  # (path, mtime_ns, etag) of a file to re-read


def _dedupe(claims: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any] | None], list[Promoted]]:
    """Decide every contested identity URL: the smallest path wins, the other claimants are duplicates.

    Returns the decisions, in the order they are made (path -> its manifest row, or None for a
    promoted file, whose parse outcome decides), and the promoted files: winners that were
    duplicates and were not parsed in this run, so they have no staged rows yet. ``claims`` is not
    changed.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in claims:
        groups.setdefault(r["article_id"], []).append(r)
    decisions: dict[str, dict[str, Any] | None] = {}
    promoted: list[Promoted] = []
    for rows in groups.values():
        ordered = sorted(rows, key=lambda r: path_order(r["source_path"]))
        was_parsed = ordered[0]["_parsed"]
        winner, *others = ({k: v for k, v in r.items() if k != "_parsed"} for r in ordered)
        if winner["status"] == "duplicate":
            if not was_parsed:
                decisions[winner["source_path"]] = None
                promoted.append((winner["source_path"], winner["mtime_ns"], winner.get("etag")))
                continue
            decisions[winner["source_path"]] = {**winner, **ledger.problem_columns(None), "status": "loaded"}
        for r in others:
            problem = duplicate_identity(winner["source_path"])
            decisions[r["source_path"]] = {**r, "status": "duplicate", **ledger.problem_columns(problem)}
    return decisions, promoted


def _reread(ctx: RunContext, parsed: Parsed, promoted: list[Promoted], services: Services, round_no: int) -> Parsed:
    """PARSED with the promoted files parsed and added (each re-read replaces an earlier outcome of its file)."""
    jobs = pa.table(
        {
            "_path": [p for p, _, _ in promoted],
            "_size": pa.array([-1] * len(promoted), pa.int64()),
            "_mtime_ns": [t for _, t, _ in promoted],
            "_target": pa.nulls(len(promoted), pa.string()),
            "_etag": pa.array([e for _, _, e in promoted], pa.string()),
            "_old_sha": pa.nulls(len(promoted), pa.string()),
        }
    )
    more = _parse_table(ctx, jobs, services, first_batch=round_no * REREAD_BATCH_BASE)
    staged = {t: parsed.staging.get(t, ()) + more.staging.get(t, ()) for t in {*parsed.staging, *more.staging}}
    # A promoted file may have an earlier 'unchanged' outcome (same bytes after a touch): the re-read
    # replaces it, or the manifest would hold the file twice (once as the old duplicate).
    earlier = parsed.outcomes.filter(pc.invert(pc.is_in(parsed.outcomes["source_path"], jobs["_path"])))
    return Parsed(pa.concat_tables([earlier, more.outcomes]), staged)


# --- build -----------------------------------------------------------------------------------


Files = list[tuple[str, int]]  # (path relative to the warehouse, rows) of one table's files


def build(state: State, services: Services) -> State:
    """Write every table of the next snapshot: touched months merged on the fan-out engine, the rest referenced."""
    t0 = time.perf_counter()
    ctx, planned = state.ctx, state.need("plan")
    res: Resolved = state.need("resolved")
    sid, previous = ctx.run_id, ctx.previous
    kept, specs = _document_plan(ctx, res)
    parsed_count = int(res.parsed_paths.num_rows)
    changed = previous is None or bool(res.dead) or bool(parsed_count)
    # The merges run elsewhere (a worker process, the cluster); meanwhile this process counts the
    # manifest, derives its small tables and reads the provider mentions of the months that stay.
    merging = _in_background(services.fanout.merge, specs)
    kept_mentions = _kept_mentions(ctx, kept) if changed else None
    counted = ledger.counts(res.manifest, planned.previous, res.parsed_paths, list(planned.unlisted))
    manifest_shape = (counted.pop("manifest_rows"), counted.pop("manifest_paths"))
    counts = {**planned.counts, **counted, "files_parsed": parsed_count}
    derived = _manifest_files(ctx, res.manifest is planned.previous)
    if derived is None:
        unknown, new_keys = _unknown_keys(previous, res.manifest, sid)
        rejects = ledger.rejects(res.manifest)
    else:
        new_keys, rejects = (), derived[1]
    # The ledger's DuckDB goes before the providers' opens: its buffers would be held beside them.
    ledger.CONNECTIONS.close()
    files = _document_files(ctx, kept, specs, merging.result())
    rows = {t.name: sum(n for _, n in files[t.name]) for t in schema.DOCUMENT_TABLES}
    files["providers"] = _provider_files(ctx, files, kept, kept_mentions)
    rows["providers"] = sum(n for _, n in files["providers"])
    load_run = {
        "run_id": sid,
        "started_at": ctx.started_at,
        "finished_at": services.clock(),
        "status": "completed",
        "seeds_dir": ctx.seeds.url,
        **counts,
        **{f"rows_{t}": n for t, n in rows.items()},
        "new_unknown_keys": list(new_keys),
        "snapshot_id": sid,
    }
    # The manifest's tables are written after the providers, as before the merges overlapped: written
    # while they ran, a 1M load's run process peaked at 999-1,061 MiB; after them 996-1,000 MiB.
    if derived is None:
        small = {"source_files": res.manifest, "rejects": rejects, "unknown_keys": unknown}
        for name, data in small.items():
            files[name] = [merge.write_small(ctx.warehouse, schema.table(name), data, sid)]
    else:
        files.update(derived[0])
    files["load_runs"] = [merge.write_small(ctx.warehouse, schema.LOAD_RUNS, _load_runs(previous, load_run), sid)]
    out = Built({t: tuple(f) for t, f in files.items()}, rows, counts, manifest_shape, new_keys, load_run, rejects)
    return state.timed("build", t0, built=out)


def _document_plan(ctx: RunContext, res: Resolved) -> tuple[dict[str, Files], list[merge.MergeSpec]]:
    """Each document table's untouched months (referenced as they are), and the merges of its touched
    month groups (previous rows minus the dead and the losers, plus this run's staged rows)."""
    s, wh, previous = ctx.settings, ctx.warehouse, ctx.previous
    touched = set(res.touched)
    groups = merge.month_groups(touched, ledger.articles_per_month(res.manifest), merge.MERGE_ARTICLES)
    dead_url = tables.write_ids(ctx.staging, "dead.parquet", "article_id", res.dead)
    losers_url = tables.write_ids(ctx.staging, "losers.parquet", "rel", res.losers)
    kept: dict[str, Files] = {}
    specs: list[merge.MergeSpec] = []
    for table in schema.DOCUMENT_TABLES:
        old = previous.files.get(table.name, []) if previous else []
        kept[table.name] = [
            (rel, previous.file_rows[rel])
            for rel in old
            if previous and merge.part_of(rel) not in touched and merge.part_of(rel) != merge.EMPTY_PART
        ]
        staged = tuple(res.parsed.staging.get(table.name, ()))
        for group in groups:
            olds = tuple(wh.join(r) for r in old if merge.part_of(r) in group)
            specs.append(
                merge.MergeSpec(
                    table.name, tuple(group), olds, staged, dead_url, losers_url, wh, ctx.run_id, s.memory_limit
                )
            )
    return kept, specs


def _document_files(
    ctx: RunContext, kept: Mapping[str, Files], specs: list[merge.MergeSpec], merged: list[Files]
) -> dict[str, Files]:
    """Each document table's files: the untouched months' and what its merges wrote (an empty file
    for a table with neither, so that every reader sees its columns)."""
    files = {name: list(entries) for name, entries in kept.items()}
    for spec, written in zip(specs, merged, strict=True):
        files[spec.table].extend(written)
    for table in schema.DOCUMENT_TABLES:
        if not files[table.name]:
            files[table.name] = [merge.write_empty(ctx.warehouse, table, ctx.run_id)]
        faults.kill_at(f"after_{table.name}")
    return files


T = TypeVar("T")


def _in_background(fn: Callable[..., T], *args: Any) -> Future[T]:
    """``fn(*args)`` on a thread of its own, in this context (a Prefect flow's, where there is one).

    Used for a call that waits on other processes (the merges), so that this process works
    meanwhile. The thread ends with the call; a run that fails first leaves it to the fan-out's
    ``close``, which ends what the call waits on.
    """
    pool = ThreadPoolExecutor(1, thread_name_prefix="pipeline-background")
    try:
        return pool.submit(contextvars.copy_context().run, fn, *args)
    finally:
        pool.shutdown(wait=False)


MANIFEST_TABLES = ("source_files", "rejects", "unknown_keys")  # the manifest, and tables derived from it alone


def _manifest_files(ctx: RunContext, unchanged: bool) -> tuple[dict[str, Files], pa.Table] | None:
    """The previous snapshot's files of ``MANIFEST_TABLES`` (and its rejects, for the run's summary)
    when the manifest is the previous one, row for row (nothing read, decided or gone: a no-op run),
    else None (written again).

    At a million files, writing the manifest again and deriving rejects and unknown keys from it cost
    ~0.8 s of a ~5 s no-op.
    """
    previous = ctx.previous
    if not unchanged or previous is None:
        return None
    files = {name: [(rel, previous.file_rows[rel]) for rel in previous.files[name]] for name in MANIFEST_TABLES}
    return files, tables.read(previous, "rejects")


def _kept_mentions(ctx: RunContext, kept: Mapping[str, Files]) -> pa.Table:
    """Provider mentions in the months this run keeps as they are (``merge.mentions``)."""
    con = merge.connect(ctx.warehouse, ctx.settings.memory_limit)
    try:
        return _mentions(con, ctx.warehouse, kept)
    finally:
        con.close()


def _mentions(con: duckdb.DuckDBPyConnection, wh: Location, files: Mapping[str, Files]) -> pa.Table:
    urls = {t: [wh.join(f) for f, _ in files.get(t, [])] for t in ("articles", "related_articles")}
    return merge.mentions(con, urls["articles"], urls["related_articles"])


def _provider_files(
    ctx: RunContext, files: Mapping[str, Files], kept: Mapping[str, Files], kept_mentions: pa.Table | None
) -> Files:
    """The providers table: when anything changed, derived again from the mentions in the kept
    months (``kept_mentions``, read while the merges ran) and in the files written since; else the
    previous file."""
    wh, previous = ctx.warehouse, ctx.previous
    if kept_mentions is None and previous is not None:
        return [(rel, previous.file_rows[rel]) for rel in previous.files["providers"]]
    kept_files = {rel for t in ("articles", "related_articles") for rel, _ in kept.get(t, [])}
    written = {t: [e for e in files[t] if e[0] not in kept_files] for t in ("articles", "related_articles")}
    parts = [kept_mentions] if kept_mentions is not None else []
    con = merge.connect(wh, ctx.settings.memory_limit)
    try:
        parts.append(_mentions(con, wh, written))
        providers = merge.providers_of(con, parts)
    finally:
        con.close()
    return [merge.write_small(wh, schema.PROVIDERS, providers, ctx.run_id)]


def _unknown_keys(previous: Snapshot | None, manifest: pa.Table, run_id: str) -> tuple[pa.Table, tuple[str, ...]]:
    """The unknown_keys table after this run, and the keys it saw first."""
    previous_keys = tables.read(previous, "unknown_keys") if previous else None
    unknown = ledger.unknown_keys(manifest, previous_keys, run_id)
    known = set(previous_keys.column("key_path").to_pylist()) if previous_keys is not None else set()
    return unknown, tuple(sorted(set(unknown.column("key_path").to_pylist()) - known))


def _load_runs(previous: Snapshot | None, load_run: dict[str, Any]) -> pa.Table:
    """The previous snapshot's load_runs with this run's row appended."""
    row = pa.Table.from_pylist([load_run], schema=schema.LOAD_RUNS.arrow_schema())
    if previous is None:
        return row
    return pa.concat_tables([ledger.conform(tables.read(previous, "load_runs"), schema.LOAD_RUNS), row])


# --- check and publish ---------------------------------------------------------------------------


def check(state: State, services: Services) -> State:
    """Post-load checks on the built snapshot; any failure keeps the previous snapshot."""
    t0 = time.perf_counter()
    built: Built = state.need("built")
    wh, previous = state.ctx.warehouse, state.ctx.previous
    urls = {t: [wh.join(f) for f, _ in entries] for t, entries in built.files.items()}
    unchanged: frozenset[str] = frozenset()
    if previous is not None and previous.meta.get("checks") == checks.DIGEST:
        unchanged = checks.unchanged_tables({t: [f for f, _ in e] for t, e in built.files.items()}, previous.files)
    memory = state.ctx.settings.memory_limit
    failures = checks.run_checks(wh, urls, dict(built.counts), built.manifest_shape, memory, unchanged)
    if failures:
        raise ChecksFailed("post-load checks failed, previous snapshot kept: " + "; ".join(failures))
    return state.timed("check", t0)


def publish(state: State, services: Services) -> State:
    """Commit (one create-only write); then Delta logs, the catalog, ``current`` and garbage follow it.

    What follows the commit cannot unpublish it: a failure there is a warning in the summary,
    and the next run (or `pipeline catalog`) finishes the job.
    """
    t0 = time.perf_counter()
    ctx, built = state.ctx, state.need("built")
    wh = ctx.warehouse
    faults.kill_at("before_commit")
    snap = commits.commit(
        wh,
        ctx.run_id,
        commits.next_version(ctx.previous),
        {t: list(f) for t, f in built.files.items()},
        {"run_id": ctx.run_id, "rows": dict(built.rows), "checks": checks.DIGEST},
        lock=services.lock,
    )
    faults.kill_at("after_commit")
    lake, warnings = follow_commit(wh, snap, ctx.settings, tables.scratch_dir(ctx.staging))
    return state.timed("publish", t0, snapshot=snap, lake=lake, warnings=state.warnings + tuple(warnings))


def follow_commit(
    wh: Location, snap: Snapshot, settings: Settings, scratch: Location
) -> tuple[delta.Published | None, list[str]]:
    """After a commit (or to repair a warehouse): Delta tables, then the catalog and ``current``, then GC.

    Each step that fails becomes a warning; GC runs only when every Delta table is up to date,
    so that it never deletes a file a Delta version still names. The caller holds the writer lock.
    """
    retention = settings.retention_policy()
    warnings: list[str] = []
    lake: delta.Published | None = None
    try:
        lake = delta.catch_up(wh, snap, lambda v: commits.read_version(wh, v), timedelta(seconds=retention.log_seconds))
        warnings += [f"Delta table {t} is behind (the next run catches up): {why}" for t, why in lake.failed.items()]
    except Exception as exc:  # the project commit stands whatever the Delta logs do
        warnings.append(f"Delta tables not updated (the next run catches up): {_one_line(exc)}")
    faults.kill_at("after_delta")
    try:
        show(wh, snap, scratch)
    except Exception as exc:
        warnings.append(f"catalog not updated (the next run or `pipeline catalog` rebuilds it): {_one_line(exc)}")
    if lake is not None and lake.complete:
        try:
            retention_gc.collect_garbage(wh, retention, settings.gc_grace_seconds, lake.current)
        except Exception as exc:
            warnings.append(f"garbage collection skipped (the next run retries): {_one_line(exc)}")
    return lake, warnings


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[[State, Services], State]
    retries: int = 0  # only where a retry is safe and can help
    doc: str = ""

    def run(self, state: State, services: Services) -> State:
        faults.fail_at(self.name)
        return self.fn(state, services)


STAGES: tuple[Stage, ...] = (
    Stage("plan", plan, retries=2, doc="list the seeds and decide what to read (read-only: retried on I/O errors)"),
    Stage("parse", parse, doc="read, hash and parse changed files into staging Parquet"),
    Stage("resolve", resolve, doc="one article per identity URL; which rows and months change"),
    Stage("build", build, doc="merge touched months, derive providers, write the small tables"),
    Stage("check", check, doc="keys, references, ids and file accounting of the built snapshot"),
    Stage("publish", publish, doc="commit, update the Delta logs, switch the catalog and current, collect garbage"),
)


def run_stage(stage: Stage, state: State, services: Services) -> State:
    """One stage, retried on transient I/O errors where the stage allows it (the only retries of a stage:
    the Prefect flow runs this very function as the stage's task, with no retries of Prefect's own)."""
    for attempt in range(stage.retries + 1):
        try:
            return stage.run(state, services)
        except OSError as exc:
            if not transient(exc) or attempt == stage.retries:
                raise
            time.sleep(2)
    raise PipelineError(f"stage {stage.name} neither returned nor failed")  # the loop always returns or raises


def describe(stage: str, state: State) -> str:
    """What a finished stage did, in a few words (progress lines, logs)."""
    if stage == "plan" and state.plan is not None:
        n = state.plan.counts
        return f"{n['files_seen']:,} files seen, {state.plan.to_read.num_rows:,} to read"
    if stage == "parse" and state.parsed is not None:
        return f"{state.parsed.outcomes.num_rows:,} files read"
    if stage == "resolve" and state.resolved is not None:
        return f"{len(state.resolved.touched):,} months to rewrite"
    if stage == "build" and state.built is not None:
        return f"{state.built.rows.get('articles', 0):,} articles"
    if stage == "publish" and state.snapshot is not None:
        return f"snapshot {state.snapshot.id} (version {state.snapshot.version})"
    return ""


# How one stage is run: ``run_stage`` directly, or (the Prefect flow) as a task that calls it.
Step = Callable[[Stage, State, Services], State]
# Before these stages the loop asks the writer lock whether it is still held (parse asks after every
# batch): a run that lost its lease stops early (exit 75) instead of working on for nothing.
LOCK_CHECKED_BEFORE = ("build", "check", "publish")


def run_reported(stage: Stage, state: State, services: Services, step: Step = run_stage) -> State:
    """One stage between the reporter's start and finish lines."""
    services.reporter.stage_started(stage.name)
    t0 = time.perf_counter()
    state = step(stage, state, services)
    services.reporter.stage_finished(stage.name, time.perf_counter() - t0, describe(stage.name, state))
    return state


def run_all(
    settings: Settings,
    run_id: str,
    clock: Clock = utc_now,
    reporter: Reporter | None = None,
    fanout: Fanout | None = None,
    step: Step = run_stage,
) -> State:
    """The run loop, the only one: open, every stage in order, record a failure, close.

    ``--orchestrator none``, the Prefect flow, tests and benchmarks all come here. What differs is
    injected: ``fanout`` (where parse batches and merges run; default: the settings' runner; the loop
    closes it), ``step`` (how a stage runs: directly, or as a Prefect task) and ``reporter``. A stage
    that fails ends the run with ``StageFailed`` (stage, run id, whether the next run retries it).
    """
    ctx, lock = open_run(settings, run_id, clock)
    engine: Fanout | None = fanout
    stage: Stage | None = None
    try:
        if engine is None:
            engine = local_or_dask(ctx.settings.runner, ctx.settings.workers, ctx.settings.dask_address)
        services = Services(engine, lock, clock, reporter or Reporter())
        state = State(ctx)
        for stage in STAGES:
            if stage.name in LOCK_CHECKED_BEFORE:
                lock.check()
            state = run_reported(stage, state, services, step)
    except Exception as exc:
        failure = StageFailed(stage.name, run_id, exc) if stage is not None else exc
        record_failure(ctx, failure, clock)
        if failure is exc:
            raise
        raise failure from exc
    except BaseException as exc:  # interrupted or cancelled: still remembered
        record_failure(ctx, exc, clock)
        raise
    finally:
        try:
            if engine is not None:
                engine.close()
        finally:
            close_run(ctx, lock)
    return state
