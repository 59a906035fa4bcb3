"""The benchmark command end to end on a tiny corpus: every report section is there and its numbers
parse. No timing assertions (CI machines vary); the counts that do not depend on speed are checked.

The command runs once for the module. A baseline it does not run is a visible skip with its reason:
dlt always (a dlt load costs minutes), pandas when neither this interpreter has pandas nor
.venv-bench is built (building it needs the network and ~30 s). The report checks are also run on
broken copies of the report, to show that they fail.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.corpus import (
    CORPUS_MARKER,
    USUAL_DAY_FOLDER,
    change_sample,
    doc_path,
    new_article,
    published_month,
    usual_day_plan,
)
from bench.measure import baseline_ready
from harness import generate

from .conftest import REPO, cli_env

N = 200
SECTIONS = [
    "## Machine",
    "## Corpus",
    "## Pipeline (`--orchestrator none`)",
    "## Prefect start-up (ephemeral)",
    "## Baselines",
    "## Ratios",
    "## BI queries (DuckDB)",
]
NOT_RUN = {
    "dlt": "dlt baseline not run by the tests: a dlt load costs minutes; "
    "measure it with `python -m bench.run --n 10000 --repeat 1`",
}
if not baseline_ready("pandas"):
    NOT_RUN["pandas"] = (
        "pandas baseline not run: pandas is not installed in this interpreter and .venv-bench is not built "
        "(building it needs the network and ~30 s; `python -m bench.run` builds it on first use)"
    )
RAN = [tool for tool in ("pandas", "dlt") if tool not in NOT_RUN]


@dataclass
class BenchRun:
    out: Path
    stdout: str
    report: str


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> BenchRun:
    out = tmp_path_factory.mktemp("bench") / "out"
    cmd = [sys.executable, "-m", "bench.run", "--n", str(N), "--repeat", "1", "--out", str(out)]
    cmd += [f"--skip-{tool}" for tool in NOT_RUN]
    proc = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return BenchRun(out, proc.stdout, (out / "report.md").read_text())


def section(report: str, heading: str) -> str:
    assert heading + "\n" in report, f"no {heading!r} section"
    start = report.index(heading + "\n") + len(heading)
    end = report.find("\n## ", start)
    return report[start : end if end >= 0 else len(report)]


def tables(text: str) -> list[dict[str, list[str]]]:
    """Markdown tables in TEXT: each as {first cell: other cells}, header and separator rows dropped."""
    found: list[dict[str, list[str]]] = []
    current: list[list[str]] | None = None
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            current = (current or []) + [cells]
        elif current is not None:
            found.append({row[0]: row[1:] for row in current[2:]})
            current = None
    return found


def number(cell: str) -> float:
    value = float(cell)
    assert math.isfinite(value) and value >= 0, cell
    return value


def numbers(cells: list[str]) -> list[float]:
    return [number(c) for c in cells]


def check_report(report: str) -> None:
    """Every section is there with its tables, and every number parses; the baselines in NOT_RUN say skipped."""
    for heading in SECTIONS:
        section(report, heading)

    [machine] = tables(section(report, "## Machine"))
    assert machine["CPU"][0]
    assert number(machine["RAM (GiB)"][0]) > 0
    for name in ("Python", "duckdb", "pyarrow", "prefect"):
        assert machine[name][0] not in ("", "not installed"), name

    [corpus] = tables(section(report, "## Corpus"))
    assert corpus["documents"] == [str(N)]
    assert 3.5 < number(corpus["average (KB/doc)"][0]) < 6

    speed, memory, stages = tables(section(report, "## Pipeline (`--orchestrator none`)"))
    files_parsed = {
        "full load": N,
        "no-op rerun": 0,
        "1% changed rerun": len(change_sample(N, 7)),
        "usual-day rerun": N // 100 + 1,  # 1% new (2 of 200) and 0.5% edited (1)
    }
    assert set(speed) == set(memory) == set(stages) == set(files_parsed)
    for run, cells in stages.items():
        assert all(v >= 0 for v in numbers(cells)), run
    for run, parsed in files_parsed.items():
        values = numbers(speed[run])
        assert values[-1] == parsed, run
        assert all(v > 0 for v in values[:4]), run
        assert number(memory[run][0]) > 0, run  # the parent process has some memory
        numbers(memory[run])

    [prefect] = tables(section(report, "## Prefect start-up (ephemeral)"))
    assert len(prefect) == 2
    for cells in prefect.values():
        assert number(cells[0]) > 0
        numbers(cells)

    baselines, rows = tables(section(report, "## Baselines"))[:2]
    [ratios] = tables(section(report, "## Ratios"))
    assert set(baselines) == {"pipeline", "pandas", "dlt"}
    assert set(ratios) == {"pandas", "dlt"}
    numbers(baselines["pipeline"])
    for tool in NOT_RUN:
        assert baselines[tool] == ["skipped"] + [""] * 5, tool
        assert ratios[tool] == ["skipped", "skipped"], tool
    assert len(rows) == 5
    assert all(len(cells) == 1 + len(RAN) for cells in rows.values())  # a column per baseline that ran
    assert rows["articles"][0] == str(N)

    timings, pruning = tables(section(report, "## BI queries (DuckDB)"))
    assert len(timings) == 3
    for cells in timings.values():
        numbers(cells)
    overlap = [numbers(cells) for cells in pruning.values()]
    assert len(overlap) == 4
    for read, total in overlap:
        assert read <= total and total > 0


def test_bench_run_writes_a_complete_report(bench_run: BenchRun) -> None:
    assert bench_run.stdout.strip() == bench_run.report.strip()
    json.loads((bench_run.out / "report.json").read_text())
    check_report(bench_run.report)


@pytest.mark.parametrize("tool", ["pandas", "dlt"])
def test_baseline_is_measured(bench_run: BenchRun, tool: str) -> None:
    if tool in NOT_RUN:
        pytest.skip(NOT_RUN[tool])
    baselines, rows = tables(section(bench_run.report, "## Baselines"))[:2]
    assert all(v > 0 for v in numbers(baselines[tool]))
    assert rows["articles"] == [str(N)] * (1 + len(RAN))  # the pipeline's and every baseline's
    [ratios] = tables(section(bench_run.report, "## Ratios"))
    assert all(v > 0 for v in numbers(ratios[tool]))


def test_the_changed_files_are_restored(bench_run: BenchRun) -> None:
    """The 1% rewrite and the usual day were undone: the corpus is a fresh one's files, marked clean."""
    corpus_dir = bench_run.out / f"corpus-{N}-seed7"
    assert json.loads((corpus_dir / CORPUS_MARKER).read_text())["dirty"] is False
    assert not (corpus_dir / USUAL_DAY_FOLDER).exists()
    assert sorted(p.name for p in corpus_dir.rglob("*.md")) == [doc_path(corpus_dir, i).name for i in range(N)]
    for i in range(N):
        assert doc_path(corpus_dir, i).read_text(encoding="utf-8") == generate.document(i, N, 7)


def test_the_usual_day_lies_in_the_newest_two_months(bench_run: BenchRun) -> None:
    corpus_dir = bench_run.out / f"corpus-{N}-seed7"
    docs = [generate.document(i, N, 7) for i in range(N)]
    months = sorted({m for text in docs if (m := published_month(text))})
    day = usual_day_plan(corpus_dir, N, 7)
    assert day.months == tuple(months[-2:])
    assert (len(day.edited), day.new) == (1, 2)
    assert all(published_month(docs[i]) in day.months for i in day.edited)
    new = [new_article(k, N, 7, day.months) for k in range(day.new)]
    assert all(published_month(text) in day.months for text in new)
    urls = {line for text in docs for line in text.splitlines() if line.startswith("webUrl:")}
    assert not urls & {line for text in new for line in text.splitlines() if line.startswith("webUrl:")}


def _replace_cell(report: str, row: str, column: int, value: str) -> str:
    """REPORT with cell COLUMN (0 = first after the row's label) of the first table row labelled ROW replaced."""
    lines = report.splitlines(keepends=True)
    for k, line in enumerate(lines):
        if line.startswith(f"| {row} |"):
            cells = line.rstrip("\n").strip("|").split("|")
            cells[column + 1] = f" {value} "
            lines[k] = "|" + "|".join(cells) + "|\n"
            return "".join(lines)
    raise AssertionError(f"no row {row!r}")


BREAKAGES = {
    "a section missing": lambda r: r.replace("## Ratios\n", "## Ratio\n"),
    "a row missing": lambda r: "".join(x for x in r.splitlines(True) if not x.startswith("| 1% changed rerun |")),
    "a number that is not one": lambda r: _replace_cell(r, "no-op rerun", 1, "nan"),
    "a wrong count": lambda r: _replace_cell(r, "full load", 4, str(N - 1)),
    "a skipped baseline with numbers": lambda r: _replace_cell(r, "dlt", 0, "1.00"),
    "an empty machine fact": lambda r: _replace_cell(r, "duckdb", 0, ""),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_the_checks_catch_a_broken_report(bench_run: BenchRun, breakage: str) -> None:
    broken = BREAKAGES[breakage](bench_run.report)
    assert broken != bench_run.report
    with pytest.raises((AssertionError, ValueError, KeyError)):
        check_report(broken)
