"""The benchmark command end to end on a tiny corpus: every report section is there and its numbers
parse. No timing assertions (CI machines vary); the counts that do not depend on speed are checked.

The dlt baseline is skipped (its venv, .venv-bench, takes ~30 s to build); the pandas baseline runs
only when pandas is installed in this interpreter (it is not a project dependency).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

from bench import generate
from bench.run import CORPUS_MARKER, change_sample, doc_path

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


def section(report: str, heading: str) -> str:
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


def test_bench_run_writes_a_complete_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bench.run", "--n", str(N), "--repeat", "1", "--skip-dlt", "--out", str(out)]
    if importlib.util.find_spec("pandas") is None:
        cmd.append("--skip-pandas")
    proc = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = (out / "report.md").read_text()
    assert proc.stdout.strip() == report.strip()
    for heading in SECTIONS:
        assert heading + "\n" in report, heading
    json.loads((out / "report.json").read_text())

    [machine] = tables(section(report, "## Machine"))
    assert machine["CPU"][0]
    assert number(machine["RAM (GiB)"][0]) > 0
    for name in ("Python", "duckdb", "pyarrow", "prefect"):
        assert machine[name][0] not in ("", "not installed"), name

    [corpus] = tables(section(report, "## Corpus"))
    assert corpus["documents"] == [str(N)]
    assert 3.5 < number(corpus["average (KB/doc)"][0]) < 6

    speed, memory = tables(section(report, "## Pipeline (`--orchestrator none`)"))
    files_parsed = {"full load": N, "no-op rerun": 0, "1% changed rerun": len(change_sample(N, 7))}
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
    numbers(baselines["pipeline"])
    assert baselines["dlt"][0] == "skipped"
    if "--skip-pandas" in cmd:
        assert baselines["pandas"][0] == "skipped"
    else:
        numbers(baselines["pandas"])
        assert rows["articles"] == [str(N), str(N)]
    assert rows["articles"][0] == str(N)

    [ratios] = tables(section(report, "## Ratios"))
    assert ratios["dlt"] == ["skipped", "skipped"]
    if "--skip-pandas" not in cmd:
        assert all(number(c) > 0 for c in ratios["pandas"])

    timings, pruning = tables(section(report, "## BI queries (DuckDB)"))
    assert len(timings) == 3
    for cells in timings.values():
        numbers(cells)
    overlap = [numbers(cells) for cells in pruning.values()]
    assert len(overlap) == 4
    for read, total in overlap:
        assert read <= total and total > 0

    # the 1% rewrite was undone: the corpus is byte-identical to a fresh one and marked clean
    corpus_dir = out / f"corpus-{N}-seed7"
    assert json.loads((corpus_dir / CORPUS_MARKER).read_text())["dirty"] is False
    for i in change_sample(N, 7):
        assert doc_path(corpus_dir, i).read_text(encoding="utf-8") == generate.document(i, N, 7)
