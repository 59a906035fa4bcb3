"""The manifest (table ``source_files``) kept columnar: what is known of every input file.

A run holds the previous manifest as an Arrow table and only this run's changes
as Python rows, so memory and Python work grow with the change, not the corpus;
joins against a million-row manifest run in DuckDB.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa

from pipeline.read.problems import Problem
from pipeline.warehouse import schema

SCHEMA = schema.SOURCE_FILES.arrow_schema()
DISCOVERED = pa.schema(
    [("source_path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()), ("_target", pa.string())]
)
FLUSH_ROWS = 20_000  # parsed outcomes are compacted into Arrow in chunks of this size


def _lit(text: str) -> str:
    """A SQL string literal (the ledger's queries run on Arrow tables we registered, never user SQL)."""
    return "'" + text.replace("'", "''") + "'"


def empty() -> pa.Table:
    return SCHEMA.empty_table()


def problem_columns(problem: Problem | None) -> dict[str, Any]:
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


def row(
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
        **problem_columns(problem),
        "run_id": run_id,
    }


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


class Ledger:
    """Previous manifest (Arrow) + this run's changes (Python, keyed by path)."""

    def __init__(self, previous: pa.Table | None) -> None:
        self.con = duckdb.connect(":memory:")
        self.prev = previous if previous is not None else empty()
        self.con.register("prev", self.prev)
        self.kept = empty()  # previous rows still valid as they are
        self.changes: dict[str, dict[str, Any]] = {}  # few: refusals and duplicate decisions, override all
        self.refused_parsed: list[str] = []  # refused at discovery in a new way: counted as read
        self._pending: list[dict[str, Any]] = []
        self._chunks: list[pa.Table] = []

    def record(self, row: dict[str, Any]) -> None:
        """A parsed file's outcome (status 'unchanged' = same bytes after a touch)."""
        self._pending.append(row)
        if len(self._pending) >= FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._chunks.append(to_table(self._pending))
            self._pending = []

    def _register_work(self) -> None:
        """Views ``work`` (parsed outcomes), ``parsed`` (paths read this run) and ``changes``."""
        self._flush()
        work = pa.concat_tables(self._chunks) if self._chunks else empty()
        self.con.register("work", work)
        self.con.register("changes", to_table(list(self.changes.values())))
        self.con.register("refused_parsed", pa.table({"source_path": pa.array(self.refused_parsed, pa.string())}))
        self.con.execute(
            "CREATE OR REPLACE TEMP VIEW parsed AS "
            "SELECT source_path FROM work WHERE status <> 'unchanged' UNION SELECT source_path FROM refused_parsed"
        )

    def close(self) -> None:
        self.con.close()

    def _sql(self, query: str) -> duckdb.DuckDBPyRelation:
        rel = self.con.sql(query)
        assert rel is not None, query
        return rel

    def _arrow(self, query: str) -> pa.Table:
        return self._sql(query).to_arrow_table()

    def previous_row(self, rel: str) -> dict[str, Any] | None:
        rows = self._arrow(f"SELECT * FROM prev WHERE source_path = {_lit(rel)}").to_pylist()
        return rows[0] if rows else None

    def plan(self, discovered: pa.Table, refused_paths: list[str], max_bytes: int) -> tuple[pa.Table, int]:
        """Split discovered files into kept (same size and mtime) and to-read; count deletions.

        Returns ``(to_read, deleted)``: to_read has ``_path``, ``_size``, ``_mtime_ns``, ``_target``
        (symlink target or NULL) and ``_old_sha`` (content hash last seen, or NULL), sorted by path.
        Rejects that may pass without a change to the file (permissions, a larger size cap, a
        parser crash or internal error fixed by an upgrade) are read again although unchanged.
        """
        self.con.register("disc", discovered)
        self.con.register("refused", pa.table({"source_path": pa.array(refused_paths, pa.string())}))
        same = f"""
            p.size = d.size AND p.mtime_ns = d.mtime_ns AND NOT (
                p.status = 'rejected' AND (p.reason IN ('unreadable', 'parser_crash', 'unexpected_error') OR (p.reason = 'too_large' AND p.size <= {int(max_bytes)})))
        """
        self.kept = self._arrow(f"SELECT p.* FROM prev p JOIN disc d ON p.source_path = d.source_path WHERE {same}")
        to_read = self._arrow(
            f"""SELECT d.source_path AS _path, d.size AS _size, d.mtime_ns AS _mtime_ns, d._target,
                       p.source_sha256 AS _old_sha
                FROM disc d LEFT JOIN prev p ON p.source_path = d.source_path
                WHERE p.source_path IS NULL OR NOT ({same})
                ORDER BY d.source_path"""
        )
        row_ = self._sql(
            "SELECT count(*) FROM prev WHERE source_path NOT IN (SELECT source_path FROM disc) "
            "AND source_path NOT IN (SELECT source_path FROM refused)"
        ).fetchall()[0]
        self.con.unregister("disc")
        return to_read, int(row_[0]) if row_ else 0

    def table(self) -> pa.Table:
        """The manifest as it stands now, sorted by path (byte order)."""
        self._register_work()
        self.con.register("kept", self.kept)
        try:
            return self._arrow(
                """SELECT * FROM (
                     SELECT * FROM kept WHERE source_path NOT IN (SELECT source_path FROM work)
                                          AND source_path NOT IN (SELECT source_path FROM changes)
                     UNION ALL
                     SELECT p.* REPLACE (w.size AS size, w.mtime_ns AS mtime_ns)
                     FROM work w JOIN prev p ON p.source_path = w.source_path
                     WHERE w.status = 'unchanged' AND w.source_path NOT IN (SELECT source_path FROM changes)
                     UNION ALL
                     SELECT * FROM work WHERE status <> 'unchanged'
                                          AND source_path NOT IN (SELECT source_path FROM changes)
                     UNION ALL
                     SELECT * FROM changes)
                   ORDER BY source_path"""
            ).cast(SCHEMA)
        finally:
            self.con.unregister("kept")

    def articles_per_month(self, m: pa.Table) -> dict[str, int]:
        self.con.register("m", m)
        try:
            rows = self._sql("SELECT partition, count(*) FROM m WHERE status = 'loaded' GROUP BY partition").fetchall()
        finally:
            self.con.unregister("m")
        return {str(p): int(n) for p, n in rows}

    def parsed_count(self) -> int:
        self._register_work()
        return int(self._sql("SELECT count(*) FROM parsed").fetchall()[0][0])

    def touched_and_losers(self, m: pa.Table) -> tuple[set[str], list[str]]:
        """Partitions that gain rows, and parsed files whose rows must not be merged."""
        self._register_work()
        self.con.register("m", m)
        try:
            touched = {
                str(r[0])
                for r in self._sql(
                    "SELECT DISTINCT partition FROM m JOIN parsed USING (source_path) WHERE m.status = 'loaded'"
                ).fetchall()
            }
            losers = [
                str(r[0])
                for r in self._sql(
                    "SELECT source_path FROM m JOIN parsed USING (source_path) WHERE m.status <> 'loaded'"
                ).fetchall()
            ]
        finally:
            self.con.unregister("m")
        return touched, losers

    def claims(self) -> list[dict[str, Any]]:
        """Rows of identity URLs claimed by several files, or held by a file marked duplicate."""
        m = self.table()
        self.con.register("m", m)
        try:
            return (
                self._sql(
                    """WITH c AS (
                         SELECT *, count(*) OVER (PARTITION BY article_id) AS claimants,
                                bool_or(status = 'duplicate') OVER (PARTITION BY article_id) AS any_dup
                         FROM m WHERE status IN ('loaded', 'duplicate'))
                       SELECT c.* EXCLUDE (claimants, any_dup),
                              c.source_path IN (SELECT source_path FROM parsed) AS _parsed
                       FROM c WHERE claimants > 1 OR any_dup
                       ORDER BY article_id, source_path"""
                )
                .to_arrow_table()
                .to_pylist()
            )
        finally:
            self.con.unregister("m")

    def dead(self, m: pa.Table) -> list[tuple[str, str]]:
        """(article_id, partition) of previously loaded rows that this run replaces or removes."""
        self._register_work()
        self.con.register("m", m)
        try:
            rows = self._sql(
                """SELECT p.article_id, p.partition FROM prev p LEFT JOIN m USING (source_path)
                   WHERE p.status = 'loaded' AND (m.source_path IS NULL OR m.status <> 'loaded'
                         OR p.source_path IN (SELECT source_path FROM parsed))"""
            ).fetchall()
        finally:
            self.con.unregister("m")
        return [(str(a), str(p)) for a, p in rows]

    def counts(self, m: pa.Table) -> dict[str, int]:
        self._register_work()
        self.con.register("m", m)
        try:
            r = self._sql(
                """SELECT count(*) FILTER (WHERE m.status = 'loaded'),
                          count(*) FILTER (WHERE m.status = 'rejected'),
                          count(*) FILTER (WHERE m.status = 'duplicate'),
                          count(*) FILTER (WHERE x.source_path IS NOT NULL AND p.source_path IS NULL),
                          count(*) FILTER (WHERE x.source_path IS NOT NULL AND p.source_path IS NOT NULL
                                           AND p.source_sha256 IS DISTINCT FROM m.source_sha256),
                          count(*) FILTER (WHERE x.source_path IS NULL OR (p.source_path IS NOT NULL
                                           AND p.source_sha256 IS NOT DISTINCT FROM m.source_sha256)),
                          count(*), count(DISTINCT m.source_path)
                   FROM m LEFT JOIN parsed x USING (source_path) LEFT JOIN prev p USING (source_path)"""
            ).fetchall()[0]
        finally:
            self.con.unregister("m")
        assert r is not None
        keys = (
            "files_loaded",
            "files_rejected",
            "files_duplicate",
            "files_new",
            "files_changed",
            "files_unchanged",
            "manifest_rows",
            "manifest_paths",
        )
        return {k: int(v) for k, v in zip(keys, r, strict=True)}

    def unknown_keys(self, m: pa.Table, previous: pa.Table | None, run_id: str) -> pa.Table:
        self.con.register("m", m)
        self.con.register(
            "prev_keys", previous if previous is not None else schema.UNKNOWN_KEYS.arrow_schema().empty_table()
        )
        try:
            return (
                self._sql(
                    f"""SELECT k AS key_path, count(*)::BIGINT AS file_count,
                              coalesce(any_value(pk.first_seen_run_id), {_lit(run_id)}) AS first_seen_run_id
                       FROM (SELECT unnest(unknown_keys) AS k FROM m WHERE status = 'loaded') u
                       LEFT JOIN prev_keys pk ON pk.key_path = u.k
                       GROUP BY k ORDER BY k"""
                )
                .to_arrow_table()
                .cast(schema.UNKNOWN_KEYS.arrow_schema())
            )
        finally:
            self.con.unregister("m")
            self.con.unregister("prev_keys")


def rejects(m: pa.Table) -> pa.Table:
    """The rejects table: manifest rows of files not loaded."""
    con = duckdb.connect(":memory:")
    try:
        con.register("m", m)
        cols = ", ".join(f'"{c}"' for c in schema.REJECTS.column_names)
        rel = con.sql(f"SELECT {cols} FROM m WHERE status IN ('rejected', 'duplicate') ORDER BY source_path")
        assert rel is not None
        out = rel.to_arrow_table()
        return out.cast(schema.REJECTS.arrow_schema())
    finally:
        con.close()
