"""The manifest (table ``source_files``) kept columnar: what is known of every input file.

Every function here takes and returns Arrow tables, never live handles, so the
results can be frozen into stage outputs. Joins against a million-row manifest run
in DuckDB (``CONNECTIONS``: one in-memory connection per thread, its tables registered for one
query at a time); Python work grows with the change, not the corpus.
"""

from __future__ import annotations

import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schema
from pipeline.read.problems import Problem, Retry, retried
from pipeline.warehouse.sql import ident, literal

T = TypeVar("T")
SCHEMA = schema.SOURCE_FILES.arrow_schema()


def empty() -> pa.Table:
    return SCHEMA.empty_table()


def problem_columns(problem: Problem | None) -> dict[str, Any]:
    if problem is None:
        return {k: None for k in ("stage", "reason", "message", "line", "column", "field")}
    return problem.as_dict()


def row(
    rel: str,
    size: int | None,
    mtime_ns: int | None,
    sha: str | None,
    status: str,
    run_id: str,
    article_id: str | None = None,
    partition: str | None = None,
    unknown_keys: Iterable[str] = (),
    problem: Problem | None = None,
    etag: str | None = None,
) -> dict[str, Any]:
    return {
        "source_path": rel,
        "size": size,
        "mtime_ns": mtime_ns,
        "etag": etag,
        "source_sha256": sha,
        "status": status,
        "article_id": article_id,
        "partition": partition,
        "unknown_keys": list(unknown_keys),
        **problem_columns(problem),
        "run_id": run_id,
    }


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def conform(data: pa.Table, table: schema.Table) -> pa.Table:
    """A table read from an older snapshot, with columns added since then as NULLs, in schema order."""
    target = table.arrow_schema()
    columns = [data.column(f.name) if f.name in data.column_names else pa.nulls(data.num_rows, f.type) for f in target]
    return pa.Table.from_arrays(columns, schema=target.remove_metadata()).cast(target)


LEDGER_MEMORY_MB = 256


class _Connections:
    """The ledger's in-memory DuckDB connections, one per thread (a new connection costs ~10 ms, and a
    connection is not shared between threads), opened on a thread's first ledger query.

    Each is closed when its thread ends (a finalizer on the thread object) or, for a thread still
    alive then (the main thread), when the interpreter exits; ``close`` ends this thread's now.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self) -> duckdb.DuckDBPyConnection:
        con: duckdb.DuckDBPyConnection | None = getattr(self._local, "con", None)
        if con is None:
            con = duckdb.connect(":memory:")
            con.execute(f"SET temp_directory = {literal(tempfile.gettempdir())}")
            self._local.con = con
            self._local.closer = weakref.finalize(threading.current_thread(), con.close)
        return con

    def close(self) -> None:
        """Close this thread's connection, if it has one (the next query opens a new one)."""
        closer: weakref.finalize | None = getattr(self._local, "closer", None)
        self._local.con = self._local.closer = None
        if closer is not None:
            closer()


CONNECTIONS = _Connections()


def _con() -> duckdb.DuckDBPyConnection:
    return CONNECTIONS.get()


def _budget(tables: dict[str, pa.Table]) -> str:
    """DuckDB's budget for one ledger query: half its inputs' size, at least ``LEDGER_MEMORY_MB``.

    A million-file manifest is ~230 MB of Arrow; sorts spill beyond the budget instead of holding
    another copy. Not every operator spills (a NOT IN over a million paths failed at 128 MB), so the
    budget grows with the inputs rather than being fixed.
    """
    need = sum(t.nbytes for t in tables.values()) // 2 // 10**6
    return f"{max(LEDGER_MEMORY_MB, need)}MB"


def _run(sql: str, tables: dict[str, pa.Table], fetch: Callable[[duckdb.DuckDBPyRelation], T]) -> T:
    """Run ``sql`` over Arrow tables registered (zero-copy) under the given names, then forget them."""
    con = _con()
    con.execute(f"SET memory_limit = {literal(_budget(tables))}")
    for name, data in tables.items():
        con.register(name, data)
    try:
        rel = con.sql(sql)
        if rel is None:
            raise RuntimeError(f"query returned no relation: {sql[:80]}")
        return fetch(rel)
    finally:
        for name in tables:
            con.unregister(name)


def _arrow(sql: str, **tables: pa.Table) -> pa.Table:
    return _run(sql, tables, lambda rel: rel.to_arrow_table())


def _rows(sql: str, **tables: pa.Table) -> list[tuple[Any, ...]]:
    return _run(sql, tables, lambda rel: rel.fetchall())


def _paths(paths: Iterable[str]) -> pa.Table:
    return pa.table({"source_path": pa.array(list(paths), pa.string())})


def _under(prefixes: Iterable[str], path: str = "p.source_path") -> str:
    """SQL: the path column ``path`` lies under one of the (unlisted) folder prefixes."""
    tests = [f"starts_with({path}, {literal(x)})" for x in prefixes]
    return "(" + " OR ".join(tests) + ")" if tests else "false"


def plan(
    prev: pa.Table, discovered: pa.Table, refused: list[str], unlisted: list[str], max_bytes: int
) -> tuple[pa.Table, pa.Table, int, int]:
    """Split discovered files into kept and to-read; count deletions and files kept under unlisted folders.

    Returns ``(kept, to_read, deleted, unlisted_kept)``. ``kept``: positions (``_row``) of the
    previous manifest's rows still valid as they are (same size and ETag, or size and mtime where
    there is no ETag; and every row under a folder that could not be listed, whatever it was), not
    a copy of them (a million rows are ~230 MB). ``to_read`` has ``_path``,
    ``_size``, ``_mtime_ns``, ``_target``, ``_etag`` and ``_old_sha`` (content hash last seen),
    sorted by path. A file under an unlisted folder is never counted as deleted.
    """
    # Rejects whose cause may lie outside the file are read again although unchanged (problems.REASONS).
    always = ", ".join(literal(r) for r in retried(Retry.ALWAYS))
    if_cap = ", ".join(literal(r) for r in retried(Retry.IF_CAP_RAISED))
    # coalesce(..., false): a NULL size or time (a path refused at discovery has no size; a time
    # beyond int64 is unknown) never proves a file unchanged. Without it the comparison is NULL,
    # and the file would be neither kept nor read: stuck out of the manifest for good.
    same = f"""coalesce(
        p.size = d.size AND coalesce(p.etag = d.etag, p.mtime_ns = d.mtime_ns) AND NOT (
            p.status = 'rejected' AND (p.reason IN ({always}) OR (p.reason IN ({if_cap}) AND p.size <= {int(max_bytes)}))),
        false)
    """
    under = _under(unlisted)
    # One join of the listing with the previous manifest, each row tagged (three joins of 1M rows cost
    # ~0.6 s of a no-op): PLAN_KEPT and PLAN_READ for listed files; for the previous rows not listed,
    # PLAN_UNLISTED (kept and counted: under a folder that could not be listed), PLAN_UNLISTED_REFUSED
    # (kept, not counted), PLAN_GONE (deleted), PLAN_NONE (a folder's own row, or a refused file).
    tagged = _arrow(
        f"""SELECT p._row, d.source_path AS _path, d.size AS _size, d.mtime_ns AS _mtime_ns, d._target,
                   d.etag AS _etag, p.source_sha256 AS _old_sha,
                   CASE WHEN d.source_path IS NOT NULL THEN
                             CASE WHEN p.source_path IS NOT NULL AND {same} THEN {PLAN_KEPT} ELSE {PLAN_READ} END
                        WHEN ends_with(p.source_path, '/') THEN {PLAN_NONE}
                        WHEN p.source_path IN (SELECT source_path FROM refused) THEN
                             CASE WHEN {under} THEN {PLAN_UNLISTED_REFUSED} ELSE {PLAN_NONE} END
                        WHEN {under} THEN {PLAN_UNLISTED}
                        ELSE {PLAN_GONE} END::TINYINT AS _what
            FROM prev p FULL OUTER JOIN disc d ON p.source_path = d.source_path""",
        prev=numbered(prev),
        disc=discovered,
        refused=_paths(refused),
    )
    what = tagged.column("_what")
    kept_tags = pa.array([PLAN_KEPT, PLAN_UNLISTED, PLAN_UNLISTED_REFUSED], pa.int8())
    kept = tagged.filter(pc.is_in(what, kept_tags)).select(["_row"])
    to_read = tagged.filter(pc.equal(what, PLAN_READ)).select(list(PLAN_READ_COLUMNS))
    if to_read.num_rows > 1:
        to_read = to_read.take(pc.sort_indices(to_read, sort_keys=[("_path", "ascending")]))
    counted = pc.value_counts(what).to_pylist()
    tally = {int(c["values"]): int(c["counts"]) for c in counted}
    return kept, to_read, tally.get(PLAN_GONE, 0), tally.get(PLAN_UNLISTED, 0)


PLAN_KEPT, PLAN_READ, PLAN_UNLISTED, PLAN_UNLISTED_REFUSED, PLAN_GONE, PLAN_NONE = range(6)
PLAN_READ_COLUMNS = ("_path", "_size", "_mtime_ns", "_target", "_etag", "_old_sha")


def numbered(prev: pa.Table) -> pa.Table:
    """``prev`` with its row positions as a ``_row`` column (the other columns are not copied)."""
    return prev.append_column("_row", positions(prev.num_rows))


def positions(n: int) -> pa.Array:
    """0, 1, ..., n - 1 as int64, made in Arrow (a tenth of the time of ``pa.array(range(n))``)."""
    if n == 0:
        return pa.array([], pa.int64())
    return pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n)), 1)


def manifest(kept: pa.Table, prev: pa.Table, work: pa.Table, decided: pa.Table) -> pa.Table:
    """The manifest as it stands now, sorted by path (byte order).

    ``kept``: positions in ``prev`` of rows still valid (from ``plan``); ``work``: outcomes of files
    read this run ('unchanged' = same bytes after a touch, which keeps the previous row with the
    new size, mtime and ETag); ``decided``: rows fixed without reading (refusals, unlisted folders,
    duplicate decisions), which override everything else.
    """
    return rebuild(kept, prev, work, decided)[0]


def rebuild(kept: pa.Table, prev: pa.Table, work: pa.Table, decided: pa.Table) -> tuple[pa.Table, pa.Array | None]:
    """``manifest``, and the paths whose rows it does not carry from ``prev`` as they are (read,
    decided, or not kept), or None when they are not few (``FEW_CHANGED``; a full load's would be
    every path, ~60 MB at a million files, for nothing). Every other path's row is the same in both
    manifests, which lets ``dead`` and ``claims`` look at these rows alone.

    The union stays in DuckDB: done in Arrow it took half the time at 100k rows, but held two more
    copies of the manifest at once (the carried rows, then the sorted result), ~460 MB at a
    million files, where a 1M load has ~25 MB to spare under its 1 GB.
    """
    decided_paths = _column(decided, "source_path")
    if not work.num_rows and not decided.num_rows and kept.num_rows == prev.num_rows:
        return prev, decided_paths  # nothing read or decided, every row kept: the previous manifest as it is
    m = _arrow(
        """SELECT * FROM (
             SELECT * EXCLUDE (_row) FROM prevr WHERE _row IN (SELECT _row FROM kept)
                                  AND source_path NOT IN (SELECT source_path FROM work)
                                  AND source_path NOT IN (SELECT source_path FROM decided)
             UNION ALL
             SELECT p.* REPLACE (w.size AS size, w.mtime_ns AS mtime_ns, w.etag AS etag)
             FROM work w JOIN prev p ON p.source_path = w.source_path
             WHERE w.status = 'unchanged' AND w.source_path NOT IN (SELECT source_path FROM decided)
             UNION ALL
             SELECT * FROM work WHERE status <> 'unchanged'
                                  AND source_path NOT IN (SELECT source_path FROM decided)
             UNION ALL
             SELECT * FROM decided)
           ORDER BY source_path""",
        kept=kept,
        prevr=numbered(prev),
        prev=prev,
        work=work,
        decided=decided,
    ).cast(SCHEMA)
    # At most this many rows change (the previous rows not kept, and every override): the changed
    # paths are sought only when they are few, so a big change never hashes all its paths for them.
    if (prev.num_rows - kept.num_rows + work.num_rows + decided.num_rows) * FEW_CHANGED >= m.num_rows:
        return m, None
    gone = prev["source_path"].filter(pc.invert(_carried_mask(prev, kept, work, decided_paths)))
    changed = [gone, work["source_path"], decided["source_path"]]
    return m, pa.chunked_array([c for p in changed for c in p.chunks], pa.string()).combine_chunks()


def _few(changed: pa.Array | None, table: pa.Table) -> bool:
    """Whether looking at the changed rows alone pays: filtering by a large set of paths costs more
    than the query it saves (a full load's claims took 3x as long filtered)."""
    return changed is not None and len(changed) * FEW_CHANGED < table.num_rows


FEW_CHANGED = 4  # the changed rows are "few" below a quarter of the manifest


def _column(table: pa.Table, name: str) -> pa.Array:
    return table[name].combine_chunks() if table.num_rows else pa.array([], table.schema.field(name).type)


def _carried_mask(prev: pa.Table, kept: pa.Table, work: pa.Table, decided_paths: pa.Array) -> pa.ChunkedArray:
    """Rows of ``prev`` carried into the manifest as they are: kept, neither read nor decided."""
    kept_here = pc.is_in(positions(prev.num_rows), value_set=_column(kept, "_row"))
    overridden = pa.concat_arrays([_column(work, "source_path"), decided_paths])
    return pc.and_(kept_here, pc.invert(pc.is_in(prev["source_path"], value_set=overridden)))


def keep_published(work: pa.Table, prev: pa.Table) -> tuple[pa.Table, list[str]]:
    """Outcomes where a changed file that cannot be read keeps its published version.

    Such a file's outcome becomes 'unchanged' with the previous size, mtime and ETag, so the
    manifest keeps its previous row (the article stays in the snapshot) and the next run, seeing
    a file that differs from that row, reads it again. Returns the outcomes and those paths.
    """
    if not work.num_rows or not prev.num_rows:
        return work, []
    held = _arrow(
        """SELECT w.source_path, p.size, p.mtime_ns, p.etag FROM work w JOIN prev p USING (source_path)
           WHERE w.status = 'rejected' AND w.reason = 'unreadable' AND p.status = 'loaded'""",
        work=work,
        prev=prev,
    )
    if not held.num_rows:
        return work, []
    paths = held["source_path"].to_pylist()
    rest = work.filter(pc.invert(pc.is_in(work["source_path"], held["source_path"])))
    kept = [
        {"source_path": r["source_path"], "size": r["size"], "mtime_ns": r["mtime_ns"], "etag": r["etag"],
         "status": "unchanged"}
        for r in held.to_pylist()
    ]  # fmt: skip
    return pa.concat_tables([rest, pa.Table.from_pylist(kept, schema=work.schema)]), sorted(paths)


def parsed_paths(work: pa.Table, refused_read: list[str]) -> pa.Table:
    """Paths this run read (changed content) or newly refused: they count as parsed."""
    return _arrow(
        "SELECT source_path FROM work WHERE status <> 'unchanged' UNION SELECT source_path FROM refused",
        work=work,
        refused=_paths(refused_read),
    )


def claims(m: pa.Table, parsed: pa.Table, changed: pa.Array | None = None) -> list[dict[str, Any]]:
    """Rows of identity URLs claimed by several files, or held by a file marked duplicate.

    The contested URLs are found by a grouping, then their rows by a semi join: a window over
    every row (a sort of the whole manifest) took 10× as long at a million rows, and a run with
    nothing contested still paid it.

    ``changed`` (from ``rebuild``): only URLs of those rows and of duplicates can be contested,
    since a published manifest holds each URL at most once as loaded; the query then sees their
    rows alone.
    """
    if _few(changed, m):
        rows = m.filter(pc.is_in(m["source_path"], value_set=changed))
        duplicates = m.filter(pc.equal(m["status"], "duplicate"))
        ids = pa.concat_arrays([_column(rows, "article_id"), _column(duplicates, "article_id")])
        m = m.filter(pc.is_in(m["article_id"], value_set=ids, skip_nulls=False))
    return (
        _arrow(
            """WITH contested AS (
                 SELECT article_id FROM m WHERE status IN ('loaded', 'duplicate')
                 GROUP BY article_id HAVING count(*) > 1 OR bool_or(status = 'duplicate'))
               SELECT m.*, m.source_path IN (SELECT source_path FROM parsed) AS _parsed
               FROM m SEMI JOIN contested c ON m.article_id IS NOT DISTINCT FROM c.article_id
               WHERE m.status IN ('loaded', 'duplicate')
               ORDER BY m.article_id, m.source_path""",
            m=m,
            parsed=parsed,
        )
    ).to_pylist()


def articles_per_month(m: pa.Table) -> dict[str, int]:
    rows = _rows("SELECT partition, count(*) FROM m WHERE status = 'loaded' GROUP BY partition", m=m)
    return {str(p): int(n) for p, n in rows}


def touched_and_losers(m: pa.Table, parsed: pa.Table) -> tuple[set[str], list[str]]:
    """Partitions that gain rows, and parsed files whose rows must not be merged."""
    m = m.filter(pc.is_in(m["source_path"], value_set=_column(parsed, "source_path")))  # what the joins keep
    touched = {
        str(r[0])
        for r in _rows(
            "SELECT DISTINCT partition FROM m JOIN parsed USING (source_path) WHERE m.status = 'loaded'",
            m=m,
            parsed=parsed,
        )
    }
    losers = [
        str(r[0])
        for r in _rows(
            "SELECT source_path FROM m JOIN parsed USING (source_path) WHERE m.status <> 'loaded'", m=m, parsed=parsed
        )
    ]
    return touched, losers


def dead(prev: pa.Table, m: pa.Table, parsed: pa.Table, changed: pa.Array | None = None) -> list[tuple[str, str]]:
    """(article_id, partition) of previously loaded rows that this run replaces or removes.

    ``changed`` (from ``rebuild``): every other row of ``prev`` is in ``m`` as it was and was
    not parsed, so it is not dead; the query then sees the changed rows alone.
    """
    if _few(changed, prev):
        prev = prev.filter(pc.is_in(prev["source_path"], value_set=changed))
        m = m.filter(pc.is_in(m["source_path"], value_set=changed))
    rows = _rows(
        """SELECT p.article_id, p.partition FROM prev p LEFT JOIN m USING (source_path)
           WHERE p.status = 'loaded' AND (m.source_path IS NULL OR m.status <> 'loaded'
                 OR p.source_path IN (SELECT source_path FROM parsed))""",
        prev=prev,
        m=m,
        parsed=parsed,
    )
    return [(str(a), str(p)) for a, p in rows]


COUNT_KEYS = (
    "files_loaded",
    "files_rejected",
    "files_duplicate",
    "files_new",
    "files_changed",
    "files_unchanged",
    "manifest_rows",
    "manifest_paths",
)


def counts(m: pa.Table, prev: pa.Table, parsed: pa.Table, unlisted: list[str]) -> dict[str, int]:
    """Accounting of the new manifest; rows kept under unlisted folders are neither new, changed nor unchanged."""
    under = _under(unlisted, path="m.source_path")
    r = _rows(
        f"""SELECT count(*) FILTER (WHERE m.status = 'loaded'),
                  count(*) FILTER (WHERE m.status = 'rejected'),
                  count(*) FILTER (WHERE m.status = 'duplicate'),
                  count(*) FILTER (WHERE NOT kept_unlisted AND x.source_path IS NOT NULL AND p.source_path IS NULL),
                  count(*) FILTER (WHERE NOT kept_unlisted AND x.source_path IS NOT NULL AND p.source_path IS NOT NULL
                                   AND p.source_sha256 IS DISTINCT FROM m.source_sha256),
                  count(*) FILTER (WHERE NOT kept_unlisted AND (x.source_path IS NULL OR (p.source_path IS NOT NULL
                                   AND p.source_sha256 IS NOT DISTINCT FROM m.source_sha256))),
                  count(*), count(DISTINCT m.source_path)
           FROM (SELECT *, ({under} AND NOT ends_with(m.source_path, '/')) AS kept_unlisted FROM m) m
           LEFT JOIN parsed x USING (source_path) LEFT JOIN prev p USING (source_path)""",
        m=m,
        prev=prev,
        parsed=parsed,
    )[0]
    return {k: int(v) for k, v in zip(COUNT_KEYS, r, strict=True)}


def unknown_keys(m: pa.Table, previous: pa.Table | None, run_id: str) -> pa.Table:
    prev_keys = previous if previous is not None else schema.UNKNOWN_KEYS.arrow_schema().empty_table()
    return _arrow(
        f"""SELECT k AS key_path, count(*)::BIGINT AS file_count,
                  coalesce(any_value(pk.first_seen_run_id), {literal(run_id)}) AS first_seen_run_id
           FROM (SELECT unnest(unknown_keys) AS k FROM m WHERE status = 'loaded') u
           LEFT JOIN prev_keys pk ON pk.key_path = u.k
           GROUP BY k ORDER BY k""",
        m=m,
        prev_keys=prev_keys,
    ).cast(schema.UNKNOWN_KEYS.arrow_schema())


def rejects(m: pa.Table) -> pa.Table:
    """The rejects table: manifest rows of files (and unlisted folders) not loaded."""
    cols = ", ".join(ident(c) for c in schema.REJECTS.column_names)
    return _arrow(f"SELECT {cols} FROM m WHERE status IN ('rejected', 'duplicate') ORDER BY source_path", m=m).cast(
        schema.REJECTS.arrow_schema()
    )
