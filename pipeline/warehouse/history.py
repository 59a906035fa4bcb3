"""`pipeline history` and `query --as-of`: the retained versions and how to name one of them.

Each committed version records its run id, its files and row counts; the files seen,
loaded and rejected by each run are in the newest snapshot's ``load_runs`` (one row per
run that published), so the history reads one small table and the commit files.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipeline import schema
from pipeline.errors import QueryError
from pipeline.storage.location import Location
from pipeline.warehouse import commits, tables
from pipeline.warehouse.commits import Snapshot

RUN_COLUMNS = ("files_seen", "files_loaded", "files_rejected", "files_duplicate")


def retained_snapshots(wh: Location) -> list[Snapshot]:
    """Every committed version still readable, newest first."""
    snaps = (commits.read_version(wh, v) for v in reversed(commits.versions(wh)))
    return [s for s in snaps if s is not None]


def history(wh: Location) -> list[dict[str, Any]]:
    """One entry per retained version, newest first: version, run, commit time, file counts, rows per table."""
    snaps = retained_snapshots(wh)
    if not snaps:
        commits.require_newest(wh)  # raises NoWarehouse with the usual message
    runs = {r["run_id"]: r for r in tables.read(snaps[0], "load_runs").to_pylist()}
    out = []
    for snap in snaps:
        run_id = str(snap.meta.get("run_id", snap.id))
        run = runs.get(run_id, {})
        out.append(
            {
                "version": snap.version,
                "run_id": run_id,
                "committed_at": datetime.fromtimestamp(snap.committed_at, UTC),
                **{k.removeprefix("files_"): run.get(k) for k in RUN_COLUMNS},
                "rows": {t.name: snap.rows(t.name) for t in schema.TABLES},
            }
        )
    return out


def format_history(entries: list[dict[str, Any]]) -> str:
    lines = ["version  committed at (UTC)   run                            seen  loaded  rejected  articles"]
    for e in entries:
        lines.append(
            f"{e['version']:>7}  {e['committed_at']:%Y-%m-%d %H:%M:%S}  {e['run_id']:<29}  "
            f"{_n(e['seen']):>5}  {_n(e['loaded']):>6}  {_n(e['rejected']):>8}  {e['rows']['articles']:>8}"
        )
    lines.append(
        f"({len(entries)} retained version{'s' if len(entries) != 1 else ''}; PIPELINE_RETENTION sets how many)"
    )
    return "\n".join(lines)


def _n(value: Any) -> str:
    return "?" if value is None else str(value)


def as_of(wh: Location, spec: str) -> Snapshot:
    """The snapshot a user names: a version number, or a time (the newest version committed at or before it)."""
    snaps = retained_snapshots(wh)
    if not snaps:
        return commits.require_newest(wh)
    span = f"retained: versions {snaps[-1].version}-{snaps[0].version}, see `pipeline history`"
    text = spec.strip()
    if text.isdigit():
        for snap in snaps:
            if snap.version == int(text):
                return snap
        raise QueryError(f"--as-of {spec}: version {text} is not retained ({span})")
    moment = _moment(text)
    for snap in snaps:
        if snap.committed_at <= moment.timestamp():
            return snap
    raise QueryError(f"--as-of {spec}: no retained version was committed by then ({span})")


def _moment(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise QueryError(f"--as-of {text!r}: give a version number or a time such as 2026-12-01T10:00:00Z") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
