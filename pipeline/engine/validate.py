"""Check a seeds folder without touching any warehouse (for pre-commit hooks and CI of seed authors).

Uses the same discovery, parser processes and crash isolation as a run; the rows it
stages go to a temporary local folder that is deleted afterwards.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from typing import Any

from pipeline.config import Settings
from pipeline.engine.fanout import LocalFanout
from pipeline.engine.parse import BatchSpec, Job, batch_size
from pipeline.read.discover import discover
from pipeline.read.problems import duplicate_identity, path_order
from pipeline.report import printable
from pipeline.storage.location import Location


def validate_folder(settings: Settings) -> list[dict[str, Any]]:
    """One entry per discovered file (and unlisted folder): path, ok, and the problem when not ok."""
    seeds = settings.seeds_location()
    found = discover(seeds, settings.patterns)
    report: list[dict[str, Any]] = [
        {"path": r.rel, "ok": False, **r.problem.as_dict()} for r in found.refused + found.unlisted
    ]
    jobs = [Job(f.rel, f.size, f.mtime_ns, f.etag, f.target) for f in found.found()]
    size = batch_size(len(jobs), settings.workers, settings.batch_size)
    outcomes = []
    fanout = LocalFanout(settings.workers)
    try:
        with tempfile.TemporaryDirectory(prefix="pipeline-validate-") as tmp:
            staging = Location.parse(tmp)
            specs = (
                BatchSpec(n, tuple(jobs[i : i + size]), seeds, staging, "validate", settings.max_file_bytes)
                for n, i in enumerate(range(0, len(jobs), size))
            )
            for result in fanout.parse(specs):
                outcomes.extend(result.outcomes)
    finally:
        fanout.close()
    outcomes.sort(key=lambda o: path_order(o.rel))
    owners: dict[str, str] = {}
    for o in outcomes:
        problem = o.problem
        if problem is None and o.article_id is not None:
            if o.article_id in owners:
                problem = duplicate_identity(owners[o.article_id])
            else:
                owners[o.article_id] = o.rel
        entry: dict[str, Any] = {"path": o.rel, "ok": problem is None}
        if problem is not None:
            entry.update(problem.as_dict())
        report.append(entry)
    report.sort(key=lambda e: e["path"])
    return report


def format_report(report: list[dict[str, Any]]) -> str:
    """One line per file for a person: names and messages with control characters escaped
    (``report.printable``), so a name holding an ANSI escape or a newline cannot drive the
    terminal or split its line. ``--format json`` keeps them exact."""
    lines = []
    for e in report:
        if e["ok"]:
            lines.append(f"ok      {printable(e['path'])}")
        else:
            lines.append(f"REJECT  {printable(e['path'])}: [{e['reason']}] {printable(str(e['message']))}")
    bad = [e for e in report if not e["ok"]]
    reasons = Counter(e["reason"] for e in bad)
    lines.append(
        f"{len(report)} files: {len(report) - len(bad)} ok, {len(bad)} would be quarantined"
        + (" (" + ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())) + ")" if bad else "")
    )
    return "\n".join(lines)
