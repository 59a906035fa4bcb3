"""Post-load checks, run on a built snapshot before it may be published.

Keys unique, no child without its parent, ids well-formed, one article per
loaded file, and the run's file accounting adding up. Each failure is one
line; any failure keeps the previous snapshot published.
"""

from __future__ import annotations

import duckdb

from pipeline import schema
from pipeline.storage.location import Location
from pipeline.warehouse.merge import connect
from pipeline.warehouse.sql import file_list, ident, literal


def _src(files: dict[str, list[str]], table: str) -> str:
    return f"read_parquet({file_list(files[table])})"


_ACCOUNTING = {"source_files": ("status", "article_id")}  # read by the loaded-files check below


def _materialize(con: duckdb.DuckDBPyConnection, src: dict[str, str]) -> dict[str, str]:
    """Copy the checked columns of every table into DuckDB once (remote files are slow to open)."""
    out = {}
    for t in schema.TABLES:
        checked = [c.name for c in t.columns if not c.nullable or c.hash_id or c.references is not None]
        cols = dict.fromkeys([*t.key, *checked, *t.parent_key, *_ACCOUNTING.get(t.name, ())])
        name = f"checked_{t.name}"
        con.execute(f"CREATE TEMP TABLE {name} AS SELECT {', '.join(ident(c) for c in cols)} FROM {src[t.name]}")
        out[t.name] = name
    return out


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def run_checks(
    wh: Location,
    files: dict[str, list[str]],
    counts: dict[str, int],
    manifest_shape: tuple[int, int],
    memory_limit: str,
) -> list[str]:
    """Every failed check as one line; empty when the snapshot may be published (``files``: URLs per table)."""
    con = connect(wh, memory_limit)
    failures: list[str] = []
    src = {t.name: _src(files, t.name) for t in schema.TABLES}
    try:
        if not wh.local:
            src = _materialize(con, src)  # one read of each remote table, not one per check
        for t in schema.TABLES:
            key = ", ".join(ident(k) for k in t.key)
            dupes = _scalar(
                con, f"SELECT count(*) FROM (SELECT {key} FROM {src[t.name]} GROUP BY ALL HAVING count(*) > 1)"
            )
            if dupes:
                failures.append(f"{t.name}: {dupes} duplicate keys ({', '.join(t.key)})")
            required = [c.name for c in t.columns if not c.nullable]
            nulls = con.execute(
                "SELECT "
                + ", ".join(f"count(*) FILTER (WHERE {ident(c)} IS NULL)" for c in required)
                + f" FROM {src[t.name]}"
            ).fetchone()
            for name, n in zip(required, nulls or (), strict=True):
                if n:
                    failures.append(f"{t.name}.{name}: NULL in a NOT NULL column")
            if t.parent:
                pairs = zip(t.parent_key, schema.table(t.parent).key, strict=True)
                on = " AND ".join(f'c."{ck}" = p."{pk}"' for ck, pk in pairs)
                orphans = _scalar(con, f"SELECT count(*) FROM {src[t.name]} c ANTI JOIN {src[t.parent]} p ON {on}")
                if orphans:
                    failures.append(f"{t.name}: {orphans} rows without a parent in {t.parent}")
        for t in schema.TABLES:
            for c in t.columns:
                if c.hash_id:
                    bad = _scalar(
                        con,
                        f"SELECT count(*) FROM {src[t.name]} WHERE NOT regexp_full_match({ident(c.name)}, "
                        f"{literal(schema.ID_PATTERN)})",
                    )
                    if bad:
                        failures.append(f"{t.name}.{c.name}: {bad} malformed ids")
                ref = c.references
                if ref is not None and ref.enforced:
                    missing = _scalar(
                        con,
                        f"SELECT count(*) FROM {src[t.name]} WHERE {ident(c.name)} IS NOT NULL "
                        f"AND {ident(c.name)} NOT IN (SELECT {ident(ref.column)} FROM {src[ref.table]})",
                    )
                    if missing:
                        failures.append(f"{t.name}: {missing} rows whose {c.name} is not in {ref.table}")
        mismatch = _scalar(
            con,
            f"SELECT count(*) FROM (SELECT article_id FROM {src['articles']} "
            f"FULL OUTER JOIN (SELECT article_id AS m FROM {src['source_files']} WHERE status = 'loaded') "
            "ON article_id = m WHERE article_id IS NULL OR m IS NULL)",
        )
        if mismatch:
            failures.append(f"articles and loaded source files differ by {mismatch} ids")
    finally:
        con.close()
    n = counts
    seen, unlisted = n["files_seen"], n["files_unlisted"]
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
