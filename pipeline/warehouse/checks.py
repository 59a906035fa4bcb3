"""Post-load checks, declared as data beside the schema and run by one small runner before a publish.

``CHECKS`` is derived from ``pipeline/schema.py`` (keys unique, NOT NULL columns, parents,
enforced references, hash-id formats) and from the registries (accepted values of
``source_files.status``, ``stage`` and ``reason``, which must be codes of
``pipeline/read/problems.py``), plus one cross-table rule: every loaded file's article is in
``articles`` and every article comes from a loaded file. Each check is one SQL count of the
rows that break it; the data dictionary lists them. The run's file accounting is arithmetic
on counts, not on tables, and stays in ``accounting``. Any failure keeps the previous snapshot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import duckdb

from pipeline import schema
from pipeline.read.problems import REASONS, STAGES
from pipeline.storage.location import Location
from pipeline.warehouse.merge import connect
from pipeline.warehouse.sql import file_list, ident, literal

FILE_STATUSES = ("loaded", "rejected", "duplicate")
RUN_STATUSES = ("completed",)
# (table, column) -> the values it may hold; NULL is allowed where the column is nullable.
ACCEPTED_VALUES: dict[tuple[str, str], tuple[str, ...]] = {
    ("source_files", "status"): FILE_STATUSES,
    ("source_files", "stage"): STAGES,
    ("source_files", "reason"): tuple(REASONS),
    ("rejects", "stage"): STAGES,
    ("rejects", "reason"): tuple(REASONS),
    ("load_runs", "status"): RUN_STATUSES,
}


@dataclass(frozen=True)
class Check:
    """One declared check: its kind, where it applies, and (for references) what it points at."""

    kind: str  # unique | not_null | parent | reference | id_format | accepted_values | loaded_articles
    table: str
    columns: tuple[str, ...] = ()
    to_table: str = ""
    to_columns: tuple[str, ...] = ()
    values: tuple[str, ...] = ()

    def violations(self, src: Mapping[str, str]) -> str:
        """SQL counting the rows that break the check (``src``: table -> relation to read)."""
        t, cols = src.get(self.table, ""), [ident(c) for c in self.columns]
        if self.kind == "unique":
            return f"SELECT count(*) FROM (SELECT {', '.join(cols)} FROM {t} GROUP BY ALL HAVING count(*) > 1)"
        if self.kind == "not_null":
            return f"SELECT count(*) FROM {t} WHERE {cols[0]} IS NULL"
        if self.kind == "parent":
            on = " AND ".join(f"c.{c} = p.{ident(k)}" for c, k in zip(cols, self.to_columns, strict=True))
            return f"SELECT count(*) FROM {t} c ANTI JOIN {src[self.to_table]} p ON {on}"
        if self.kind == "reference":
            target = f"SELECT {ident(self.to_columns[0])} FROM {src[self.to_table]}"
            return f"SELECT count(*) FROM {t} WHERE {cols[0]} IS NOT NULL AND {cols[0]} NOT IN ({target})"
        if self.kind == "id_format":
            return f"SELECT count(*) FROM {t} WHERE NOT regexp_full_match({cols[0]}, {literal(schema.ID_PATTERN)})"
        if self.kind == "accepted_values":
            allowed = ", ".join(literal(v) for v in self.values)
            return f"SELECT count(*) FROM {t} WHERE {cols[0]} IS NOT NULL AND {cols[0]} NOT IN ({allowed})"
        if self.kind == "loaded_articles":
            loaded = f"SELECT article_id AS m FROM {src['source_files']} WHERE status = 'loaded'"
            return (
                f"SELECT count(*) FROM (SELECT article_id FROM {t} FULL OUTER JOIN ({loaded}) "
                "ON article_id = m WHERE article_id IS NULL OR m IS NULL)"
            )
        raise ValueError(f"unknown check kind {self.kind!r}")

    def tables(self) -> frozenset[str]:
        """The tables whose rows decide the count."""
        extra = {"source_files"} if self.kind == "loaded_articles" else set()
        return frozenset({self.table, *([self.to_table] if self.to_table else []), *extra})

    def failure(self, n: int) -> str:
        """One line for the run's error message."""
        col = ", ".join(self.columns)
        return {
            "unique": f"{self.table}: {n} duplicate keys ({col})",
            "not_null": f"{self.table}.{col}: {n} NULLs in a NOT NULL column",
            "parent": f"{self.table}: {n} rows without a parent in {self.to_table}",
            "reference": f"{self.table}: {n} rows whose {col} is not in {self.to_table}",
            "id_format": f"{self.table}.{col}: {n} malformed ids",
            "accepted_values": f"{self.table}.{col}: {n} rows with a value outside the accepted ones",
            "loaded_articles": f"articles and loaded source files differ by {n} ids",
        }[self.kind]

    def describe(self) -> str:
        """The check in words, for the data dictionary."""
        col = ", ".join(f"`{c}`" for c in self.columns)
        target = f"{self.to_table}.{self.to_columns[0]}" if self.to_columns else self.to_table
        return {
            "unique": f"unique: {col}",
            "not_null": f"not null: {col}",
            "parent": f"every row has its parent in `{self.to_table}` ({col})",
            "reference": f"{col} is a `{target}`",
            "id_format": f"{col} matches `{schema.ID_PATTERN}`",
            "accepted_values": f"{col} in {_values(self.values)}",
            "loaded_articles": "one article per loaded source file, and one loaded source file per article",
        }[self.kind]


def _values(values: tuple[str, ...]) -> str:
    if set(values) == set(REASONS):
        return "the reason codes of docs/rejects.md"
    return ", ".join(f"`{v}`" for v in values)


def describe_table(table: str) -> str:
    """The checks of one table in words (NOT NULL columns named once)."""
    mine = [c for c in CHECKS if c.table == table]
    not_null = [c.columns[0] for c in mine if c.kind == "not_null"]
    parts = [c.describe() for c in mine if c.kind == "unique"]
    if not_null:
        parts.append("not null: " + ", ".join(f"`{c}`" for c in not_null))
    parts += [c.describe() for c in mine if c.kind not in ("unique", "not_null")]
    return "; ".join(parts)


def declared_checks() -> tuple[Check, ...]:
    """Every check, from the schema's declarations and the registries, table by table."""
    out: list[Check] = []
    for t in schema.TABLES:
        out.append(Check("unique", t.name, t.key))
        out += [Check("not_null", t.name, (c.name,)) for c in t.columns if not c.nullable]
        if t.parent:
            out.append(Check("parent", t.name, t.parent_key, t.parent, schema.table(t.parent).key))
        for c in t.columns:
            if c.hash_id:
                out.append(Check("id_format", t.name, (c.name,)))
            if c.references is not None and c.references.enforced:
                out.append(Check("reference", t.name, (c.name,), c.references.table, (c.references.column,)))
        for (table, column), values in ACCEPTED_VALUES.items():
            if table == t.name:
                out.append(Check("accepted_values", table, (column,), values=values))
    out.append(Check("loaded_articles", "articles", ("article_id",)))
    return tuple(out)


CHECKS = declared_checks()
# What a snapshot's commit records as "checked by": the SQL of every check. A later run may skip a
# check whose tables are the files of a snapshot checked by the same SQL (data files never change).
DIGEST = hashlib.sha256(
    "\n".join(c.violations({t.name: t.name for t in schema.TABLES}) for c in CHECKS).encode()
).hexdigest()[:16]


def unchanged_tables(files: Mapping[str, Collection[str]], checked: Mapping[str, Collection[str]]) -> frozenset[str]:
    """Tables whose files (names relative to the warehouse) are exactly those of the checked snapshot."""
    return frozenset(t for t, names in files.items() if t in checked and list(checked[t]) == list(names))


def _checked_columns(table: schema.Table) -> list[str]:
    """The columns any check reads (object stores: only these are copied into DuckDB)."""
    used = [c for check in CHECKS if check.table == table.name for c in check.columns]
    used += [c for check in CHECKS if check.to_table == table.name for c in check.to_columns]
    if table.name == "source_files":
        used += ["status", "article_id"]
    return list(dict.fromkeys(c for c in table.column_names if c in used))


# A table of more data files than this (one per month and part: a corpus spanning decades) is copied into
# DuckDB once before its checks. 20k writer documents over 325 months: checks 0.92 s -> 0.35 s; 100k
# documents over 50 months: 0.42 s read in place, 0.44 s copied, so fewer files stay where they are.
MANY_FILES = 100


def _materialize(con: duckdb.DuckDBPyConnection, src: dict[str, str]) -> dict[str, str]:
    """Copy the checked columns of every table in ``src`` into DuckDB once (remote files are slow to open)."""
    out = {}
    for t in schema.TABLES:
        if t.name not in src:
            continue
        name = f"checked_{t.name}"
        cols = ", ".join(ident(c) for c in _checked_columns(t))
        con.execute(f"CREATE TEMP TABLE {name} AS SELECT {cols} FROM {src[t.name]}")
        out[t.name] = name
    return out


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def table_checks(
    wh: Location,
    files: Mapping[str, list[str]],
    memory_limit: str,
    checks: tuple[Check, ...] = CHECKS,
    unchanged: Collection[str] = frozenset(),
) -> list[str]:
    """Run ``checks`` over the built snapshot's files (URLs per table); one line per failed check.

    A check that reads only ``unchanged`` tables (files of a snapshot that passed the same checks)
    is not run again: its count was 0 then and the files are the same. A no-op at a million files
    spent ~2.5 s re-checking tables it had not written.
    """
    todo = [c for c in checks if not c.tables() <= set(unchanged)]
    if not todo:
        return []
    needed = set().union(*(c.tables() for c in todo))
    con = connect(wh, memory_limit)
    try:
        src = {t.name: f"read_parquet({file_list(files[t.name])})" for t in schema.TABLES if t.name in needed}
        if wh.slow_to_open:
            src = _materialize(con, src)  # one read of each remote table, not one per check
        else:  # locally, only tables of many files: each check opens them all again
            src.update(_materialize(con, {t: s for t, s in src.items() if len(files[t]) > MANY_FILES}))
        return [check.failure(n) for check in todo if (n := _count(con, check.violations(src)))]
    finally:
        con.close()


def accounting(counts: Mapping[str, int], manifest_shape: tuple[int, int]) -> list[str]:
    """The run's file accounting: every file seen is loaded, rejected or a duplicate, once."""
    n = counts
    seen, unlisted = n["files_seen"], n["files_unlisted"]
    failures = []
    if seen + unlisted != n["files_loaded"] + n["files_rejected"] + n["files_duplicate"]:
        failures.append(
            f"accounting: {seen} files seen + {unlisted} kept unlisted != {n['files_loaded']} loaded"
            f" + {n['files_rejected']} rejected + {n['files_duplicate']} duplicates"
        )
    if manifest_shape != (seen + unlisted, seen + unlisted):
        failures.append(
            f"accounting: {seen} files seen + {unlisted} kept unlisted, but the manifest has {manifest_shape[0]} rows"
            f" for {manifest_shape[1]} paths"
        )
    if seen != n["files_new"] + n["files_changed"] + n["files_unchanged"]:
        failures.append(
            f"accounting: {seen} files seen != {n['files_new']} new + {n['files_changed']} changed"
            f" + {n['files_unchanged']} unchanged"
        )
    return failures


def run_checks(
    wh: Location,
    files: Mapping[str, list[str]],
    counts: Mapping[str, int],
    manifest_shape: tuple[int, int],
    memory_limit: str,
    unchanged: Collection[str] = frozenset(),
) -> list[str]:
    """Every failed check as one line; empty when the snapshot may be published."""
    return table_checks(wh, files, memory_limit, unchanged=unchanged) + accounting(counts, manifest_shape)
