"""`pipeline status`: health of a warehouse from its own tables, no Prefect server needed."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pyarrow.compute as pc

from pipeline import schema
from pipeline.storage.location import Location
from pipeline.warehouse import commits, tables


def warehouse_status(wh: Location, now: datetime, max_age: timedelta | None) -> dict[str, Any]:
    """Last runs, row counts, rejects and age; ``healthy`` is False when it should page someone."""
    warehouse = wh.url
    snap = commits.read_newest(wh)
    if snap is None:
        failure = commits.read_failure(wh)
        why = f"no published snapshot; last failure: {failure['error']}" if failure else "no published snapshot"
        return {"warehouse": warehouse, "healthy": False, "problem": why, "runs": []}
    runs = tables.read(snap, "load_runs").to_pylist()
    runs.sort(key=lambda r: r["started_at"])
    last = runs[-1]
    rows = {t.name: snap.rows(t.name) for t in schema.TABLES}  # row counts are in the commit: no file is opened
    age = now - last["finished_at"]
    newest = None
    if rows["articles"]:
        newest = pc.max(tables.read(snap, "articles", ["published_at"]).column(0)).as_py()
    problem: str | None = None
    failure = commits.read_failure(wh)
    if failure and failure["failed_at"] > last["finished_at"].isoformat():
        problem = f"last run {failure['run_id']} failed at {failure['failed_at']}: {failure['error']}"
    elif max_age is not None and age > max_age:
        problem = f"last run finished {_human(age)} ago, more than --max-age {_human(max_age)}"
    return {
        "warehouse": warehouse,
        "snapshot_id": snap.id,
        "version": snap.version,
        "healthy": problem is None,
        "problem": problem,
        "last_run": {k: last[k] for k in ("run_id", "status", "started_at", "finished_at")},
        "last_failure": failure,
        "last_run_age_seconds": round(age.total_seconds(), 1),
        "newest_published_at": newest,
        "rows": rows,
        "rejects": rows["rejects"],
        "runs": [
            {
                k: r.get(k)
                for k in (
                    "run_id",
                    "status",
                    "finished_at",
                    "files_seen",
                    "files_new",
                    "files_changed",
                    "files_deleted",
                    "files_rejected",
                    "files_duplicate",
                    "files_unlisted",
                )
            }
            for r in runs[-10:]
        ],
    }


def _human(delta: timedelta) -> str:
    s = int(delta.total_seconds())
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def format_status(info: dict[str, Any]) -> str:
    if "last_run" not in info:
        return f"{info['warehouse']}: {info['problem']}"
    last = info["last_run"]
    lines = [
        f"warehouse {info['warehouse']} (snapshot {info['snapshot_id']})",
        f"last run {last['run_id']}: {last['status']}, finished {last['finished_at']:%Y-%m-%d %H:%M:%S} UTC "
        f"({_human(timedelta(seconds=info['last_run_age_seconds']))} ago)",
        f"newest article published {info['newest_published_at'] or 'n/a'}",
        f"rejects: {info['rejects']}",
        "rows: " + ", ".join(f"{t} {n}" for t, n in info["rows"].items()),
        "recent runs:",
    ]
    for r in reversed(info["runs"]):
        lines.append(
            f"  {r['run_id']}  {r['status']:<9} seen {r['files_seen']}, new {r['files_new']}, "
            f"changed {r['files_changed']}, deleted {r['files_deleted']}, rejected {r['files_rejected']}"
        )
    if info["problem"]:
        lines.append(f"UNHEALTHY: {info['problem']}")
    return "\n".join(lines)
