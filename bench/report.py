"""The benchmark's Markdown report (and report.json): one small function per section.

``render`` writes the title, then each of ``SECTIONS`` as its heading followed by what its writer
returns. Every writer takes the results ``bench.run`` collected and returns the section's lines.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .measure import BaselineRun, PipelineRun

BASELINE_TOOLS = ("pandas", "dlt")
RUN_LABELS = (
    ("full load", "full"),
    ("no-op rerun", "noop"),
    ("1% changed rerun", "change"),
    ("usual-day rerun", "usual"),
)
MEMORY_KEYS = ("parent_peak_mb", "child_peak_mb", "descendants", "tree_peak_mb", "maxrss_mb")  # Measured's
# the pipeline's tables and the baselines' names for them
TABLES = (
    ("articles", "articles"),
    ("article_topics", "topics"),
    ("article_images", "images"),
    ("related_articles", "related"),
    ("related_article_images", "related_images"),
)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def f2(x: float) -> str:
    return f"{x:.2f}"


def f0(x: float) -> str:
    return f"{x:.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _mem(runs: list[Any], key: str) -> float:
    return median([r.memory[key] for r in runs])


def _full_load(results: dict[str, Any]) -> tuple[list[PipelineRun], float, float]:
    """The full-load runs, and their median work and wall seconds (what the baselines compare with)."""
    full: list[PipelineRun] = results["pipeline"]["full"]
    return full, median([r.work_s for r in full]), median([r.wall_s for r in full])


def _baseline_seconds(runs: list[BaselineRun]) -> tuple[float, float]:
    """Median wall and work (the script's own timer) seconds of a baseline."""
    return median([b.wall_s for b in runs]), median([b.inner_s for b in runs])


# --- sections -------------------------------------------------------------------------------------


def title(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    return [
        "# Benchmark report",
        "",
        f"`{results['command']}` — {results['date']}, commit `{m['commit']}`, {results['repeat']} repeat(s), "
        "medians shown. Times in seconds, memory in MiB, docs/s = corpus documents ÷ seconds.",
    ]


def machine_section(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    return _table(
        ["what", "value"],
        [
            ["CPU", m["cpu"]],
            [
                "cores (logical / physical / usable)",
                f"{m['logical_cores']} / {m['physical_cores']} / {m['usable_cores']}",
            ],
            ["RAM (GiB)", f"{m['ram_gib']:.1f}" if m["ram_gib"] else "unknown"],
            ["OS", m["os"]],
            ["Python", m["python"]],
            *[[name, v] for name, v in m["versions"].items()],
            *[[name, v] for name, v in results.get("baseline_versions", {}).items()],
            ["load average at start (1/5/15 min)", " / ".join(f"{x:.2f}" for x in m["load_average_start"])],
            ["load average at end (1/5/15 min)", " / ".join(f"{x:.2f}" for x in results["load_average_end"])],
        ],
    )


def corpus_section(results: dict[str, Any]) -> list[str]:
    c = results["corpus"]
    return _table(
        ["what", "value"],
        [
            ["documents", str(c["n"])],
            ["seed", str(c["seed"])],
            ["size (MB)", f"{c['bytes'] / 1e6:.1f}"],
            ["average (KB/doc)", f"{c['bytes'] / c['n'] / 1e3:.2f}"],
            ["generated in (s)", f2(c["generated_s"]) if c["generated_s"] is not None else "reused"],
            ["path", f"`{c['path']}`"],
        ],
    )


def pipeline_section(results: dict[str, Any]) -> list[str]:
    n, runs, day = results["n"], results["pipeline"], results["usual_day"]
    full = runs["full"]
    speed = [
        [
            label,
            f2(median([r.work_s for r in runs[key]])),
            f2(median([r.wall_s for r in runs[key]])),
            f0(n / median([r.work_s for r in runs[key]])),
            f0(n / median([r.wall_s for r in runs[key]])),
            f0(median([r.files_parsed for r in runs[key]])),
        ]
        for label, key in RUN_LABELS
    ]
    memory = [[label, *(f0(_mem(runs[key], k)) for k in MEMORY_KEYS)] for label, key in RUN_LABELS]
    names = list(full[-1].summary["seconds"])
    stages = [
        [label, *(f2(median([r.summary["seconds"].get(s, 0.0) for r in runs[key]])) for s in names)]
        for label, key in RUN_LABELS
    ]
    return [
        f"Each repeat starts from an empty warehouse; workers: {results['workers'] or 'default (CPU count)'}. "
        "*work* = `finished_at − started_at` of the run's `load_runs` row; *wall* = the whole `pipeline run` "
        "process (interpreter start, imports, summary). The 1% rerun rewrites the title and publishedDateTime "
        f"of {results['changed_files']} files, spread over all months. The usual-day rerun is a news feed's "
        f"day: {day['new']} new articles and {len(day['edited'])} retitled ones, all published in "
        f"{' and '.join(day['months'])} (the corpus's newest months); its work is "
        f"**{100 * median([r.work_s for r in runs['usual']]) / median([r.work_s for r in full]):.1f}%** of the "
        "full load's. After each of the two, an unmeasured run brings the warehouse back to the corpus.",
        "",
        *_table(["run", "work (s)", "wall (s)", "docs/s (work)", "docs/s (wall)", "files parsed"], speed),
        "",
        "Peak memory (MiB) of the process tree:",
        "",
        *_table(["run", "parent", "largest child", "children", "tree (sum of RSS)", "largest (wait4)"], memory),
        "",
        "Rows after the full load: " + ", ".join(f"{t} {v}" for t, v in full[-1].summary["rows"].items()) + ".",
        "",
        "Seconds per stage (medians; *work* spans plan to build, check and publish follow it):",
        "",
        *_table(["run", *names], stages),
    ]


def prefect_section(results: dict[str, Any]) -> list[str]:
    prefect: list[PipelineRun] = results["prefect"]
    if not prefect:
        return ["skipped (--skip-prefect)"]
    _, full_work, full_wall = _full_load(results)
    rows = [
        [
            "full load, fresh Prefect home" if r.label == "prefect-full" else "no-op rerun, existing home",
            f2(r.wall_s),
            f2(r.work_s),
            f2(r.wall_s - r.work_s),
            f2(r.summary.get("prefect_seconds") or 0.0),
            f0(r.memory["tree_peak_mb"]),
        ]
        for r in prefect
    ]
    return [
        "`pipeline run` with the default orchestrator and no API URL: Prefect starts a temporary local server. "
        "The first run has a fresh Prefect home (its database is created), the second reuses it (no-op rerun). "
        "*start-up + overhead* = process wall − pipeline work; *CLI* = the `prefect_seconds` the CLI reports "
        "(its own wall time minus pipeline work, interpreter start excluded).",
        "",
        *_table(
            [
                "run",
                "wall (s)",
                "pipeline work (s)",
                "start-up + overhead (s)",
                "CLI prefect_seconds",
                "peak tree (MiB)",
            ],
            rows,
        ),
        "",
        f"Same load without Prefect (median above): wall {f2(full_wall)} s, work {f2(full_work)} s.",
    ]


def baselines_section(results: dict[str, Any]) -> list[str]:
    n = results["n"]
    full, full_work, full_wall = _full_load(results)
    baselines: dict[str, list[BaselineRun]] = results["baselines"]
    ran = [t for t in BASELINE_TOOLS if baselines.get(t)]

    def speed(tool: str, wall: float, work: float, runs: list[Any]) -> list[str]:
        memory = [f0(_mem(runs, "tree_peak_mb")), f0(_mem(runs, "maxrss_mb"))]
        return [tool, f2(wall), f2(work), f0(n / wall), f0(n / work), *memory]

    rows = [speed("pipeline", full_wall, full_work, full)]
    for tool in BASELINE_TOOLS:
        if tool in ran:
            rows.append(speed(tool, *_baseline_seconds(baselines[tool]), baselines[tool]))
        else:
            rows.append([tool, "skipped", "", "", "", "", ""])
    counts = [
        [ours, str(full[-1].summary["rows"].get(ours, "")), *[str(baselines[t][-1].rows.get(theirs, "")) for t in ran]]
        for ours, theirs in TABLES
    ]
    lines = [
        "Same corpus, one process each (bench/baselines/). *wall* = the whole process; *work* = the script's own "
        "timer (imports excluded).",
        "",
        *_table(
            ["tool", "wall (s)", "work (s)", "docs/s (wall)", "docs/s (work)", "peak tree (MiB)", "largest (wait4)"],
            rows,
        ),
        "",
        "Rows per table (a sanity check that every tool read the same data):",
        "",
        *_table(["table", "pipeline", *ran], counts),
    ]
    for note in results["notes"]:
        lines += ["", f"Note: {note}."]
    return lines


def ratios_section(results: dict[str, Any]) -> list[str]:
    _, full_work, full_wall = _full_load(results)
    rows = []
    for tool in BASELINE_TOOLS:
        runs = results["baselines"].get(tool)
        if not runs:
            rows.append([tool, "skipped", "skipped"])
            continue
        wall, work = _baseline_seconds(runs)
        rows.append([tool, f2(wall / full_wall), f2(work / full_work)])
    return [
        "Pipeline docs/s ÷ baseline docs/s (above 1: the pipeline is faster). *wall*: whole processes on both "
        "sides; *work*: the pipeline's `load_runs` time against the baseline's own timer.",
        "",
        *_table(["baseline", "docs/s ratio (wall)", "docs/s ratio (work)"], rows),
    ]


def queries_section(results: dict[str, Any]) -> list[str]:
    q = results["queries"]
    p = q["pruning"]
    timings = [[r["query"], f"{r['first_ms']:.1f}", f"{r['median_ms']:.1f}", str(r["rows"])] for r in q["timings"]]
    pruning = [
        ["files whose published_at min/max overlap", str(p["files_overlapping"]), str(p["files"])],
        ["row groups whose min/max overlap", str(p["row_groups_overlapping"]), str(p["row_groups"])],
        ["rows in those row groups", str(p["rows_overlapping"]), str(p["rows"])],
        [
            "row groups DuckDB scanned (EXPLAIN ANALYZE)",
            str(p.get("duckdb_row_groups_scanned", "n/a")),
            str(p.get("duckdb_row_groups_total", "n/a")),
        ],
    ]
    sqls = "\n".join(f"-- {r['query']}\n{r['sql']};" for r in q["timings"])
    return [
        f"Over `{q['warehouse']}` ({q['n']} documents) through `catalog.duckdb` (read-only, as a BI tool "
        "connects); results fetched to Python; first execution, then the median of 5 more.",
        "",
        *_table(["query", "first (ms)", "median (ms)", "rows"], timings),
        "",
        f"Row groups for the {q['month']} range over `current/articles/*.parquet`:",
        "",
        *_table(["what", "read / overlapping", "total"], pruning),
        "",
        "<details><summary>SQL</summary>",
        "",
        "```sql",
        sqls,
        "```",
        "",
        "</details>",
    ]


SECTION_WRITERS: tuple[tuple[str, Callable[[dict[str, Any]], list[str]]], ...] = (
    ("## Machine", machine_section),
    ("## Corpus", corpus_section),
    ("## Pipeline (`--orchestrator none`)", pipeline_section),
    ("## Prefect start-up (ephemeral)", prefect_section),
    ("## Baselines", baselines_section),
    ("## Ratios", ratios_section),
    ("## BI queries (DuckDB)", queries_section),
)
SECTIONS = tuple(heading for heading, _ in SECTION_WRITERS)


def render(results: dict[str, Any]) -> str:
    lines = title(results)
    for heading, write in SECTION_WRITERS:
        lines += ["", heading, "", *write(results)]
    return "\n".join([*lines, ""])


def to_jsonable(value: Any) -> Any:
    """RESULTS as JSON types (for report.json): the run records as dicts, paths as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
