"""Human and machine summaries of a run, a folder check, or the warehouse status."""

from __future__ import annotations

import json
import re
from typing import Any


def run_summary(state: Any, prefect_seconds: float | None = None) -> dict[str, Any]:
    """What a finished run (the engine's final ``State``) did, as plain data (CLI output, Prefect artifact, JSON)."""
    built, snap, ctx = state.built, state.snapshot, state.ctx
    row = built.load_run if built else None
    work = (row["finished_at"] - row["started_at"]).total_seconds() if row else None
    return {
        "run_id": ctx.run_id,
        "snapshot_id": snap.id if snap else None,
        "version": snap.version if snap else None,
        "warehouse": ctx.warehouse.url,
        "runner": ctx.settings.runner,
        "files": {k.removeprefix("files_"): v for k, v in (built.counts if built else {}).items()},
        "rows": dict(built.rows) if built else {},
        "new_unknown_keys": list(built.new_unknown_keys) if built else [],
        "seconds": {k: round(v, 3) for k, v in state.timings.items()},
        "pipeline_seconds": round(work, 3) if work is not None else None,
        "prefect_seconds": round(prefect_seconds, 3) if prefect_seconds is not None else None,
        "delta_commits": dict(state.lake.committed) if getattr(state, "lake", None) else {},
        "delta_seconds": round(state.lake.seconds, 3) if getattr(state, "lake", None) else None,
        "warnings": list(getattr(state, "warnings", ())),
    }


SHOWN_ITEMS = 20  # names listed on one human line before "+N more"
SHOWN_CHARS = 200  # characters of one name shown on a human line


# Characters that would act on a terminal or reshape the line instead of showing: C0 and C1
# controls, DEL, line/paragraph separators, and the bidirectional overrides and isolates.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` for a terminal: control characters as ``\\xNN``/``\\uNNNN`` escapes, so a file name
    with an ANSI escape or a newline can neither drive the terminal nor split a line. Human output
    only: JSON output keeps names exact."""
    return _UNPRINTABLE.sub(_escape, text) if _UNPRINTABLE.search(text) else text


def bounded_list(items: list[str], limit: int = SHOWN_ITEMS) -> str:
    """At most ``limit`` names (each escaped and cut to ``SHOWN_CHARS``), then "+N more": a run with
    100,000 new keys prints one short line, not a megabyte (the full list is in the JSON summary)."""
    shown = []
    for item in items[:limit]:
        text = printable(item)
        shown.append(text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…")
    more = f" (+{len(items) - limit:,} more)" if len(items) > limit else ""
    return ", ".join(shown) + more


def format_summary(summary: dict[str, Any]) -> str:
    f = summary["files"]
    lines = [
        f"run {summary['run_id']}: {f['seen']} files seen: {f['loaded']} loaded, "
        f"{f['rejected']} rejected, {f['duplicate']} duplicates",
        f"  changes: {f['new']} new, {f['changed']} changed, {f['unchanged']} unchanged, {f['deleted']} deleted "
        f"({f['parsed']} parsed)",
        *(
            [f"  {f['unlisted']} files kept as they were: their folder could not be listed (see rejects)"]
            if f.get("unlisted")
            else []
        ),
        "  rows: " + ", ".join(f"{t} {n}" for t, n in summary["rows"].items()),
    ]
    if summary["new_unknown_keys"]:
        lines.append("  new unknown keys (kept in extra): " + bounded_list(summary["new_unknown_keys"]))
    timing = f"  pipeline work {summary['pipeline_seconds']}s"
    if summary.get("prefect_seconds") is not None:
        timing += f", Prefect overhead {summary['prefect_seconds']}s"
    lines.append(timing)
    if summary.get("flow_run_url"):
        lines.append(f"  Prefect: {summary['flow_run_url']}")
    elif summary.get("prefect_api_url"):
        lines.append(f"  Prefect: flow run {summary['flow_run_id']} at {summary['prefect_api_url']}")
    if f["rejected"] or f["duplicate"]:
        lines.append('  see rejects: pipeline query "select source_path, reason, message from rejects"')
    return "\n".join(lines)


def rejects_markdown(rows: list[dict[str, Any]], limit: int = 200) -> str:
    if not rows:
        return "No quarantined files."
    lines = ["| file | stage | reason | message |", "|---|---|---|---|"]
    for r in rows[:limit]:
        msg = printable(str(r["message"])).replace("|", "\\|")
        path = printable(str(r["source_path"])).replace("|", "\\|")
        lines.append(f"| `{path}` | {r['stage']} | {r['reason']} | {msg} |")
    if len(rows) > limit:
        lines.append(f"| … | | | {len(rows) - limit} more in the rejects table |")
    return "\n".join(lines)


def summary_markdown(summary: dict[str, Any]) -> str:
    f = summary["files"]
    lines = [
        f"# Ingest run {summary['run_id']}",
        "",
        "| files | count |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in f.items()],
        "",
        "| table | rows |",
        "|---|---|",
        *[f"| {t} | {n} |" for t, n in summary["rows"].items()],
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in summary["seconds"].items()],
    ]
    if summary["new_unknown_keys"]:
        lines += [
            "",
            "New frontmatter keys outside the contract: " + bounded_list(summary["new_unknown_keys"]),
        ]
    return "\n".join(lines)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str, ensure_ascii=False)
