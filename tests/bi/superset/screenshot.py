"""Remake docs/superset-chart.png: a bar chart Superset 6.1 renders from the sample warehouse.

    .venv/bin/python tests/bi/superset/screenshot.py [--out docs/superset-chart.png] [--tz America/New_York]

Builds a warehouse from the shipped seeds/ in a temporary folder, builds (or reuses) .venv-superset
from tests/bi/superset/requirements.txt, starts a throw-away Superset on 127.0.0.1 under the given
time zone (tests/bi/superset/local.py), connects it to catalog.duckdb as the README says, makes a bar
chart of articles per month (published_at at the month grain) and screenshots it in headless
Chromium (tests/bi/superset/browser_shot.py; needs `apt-get install chromium chromium-driver`).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO))

from harness.envs import ensure_venv  # noqa: E402

_spec = importlib.util.spec_from_file_location("superset_local", HERE / "local.py")
assert _spec is not None and _spec.loader is not None
local = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(local)

CHART_PARAMS = {
    "x_axis": "published_at",
    "time_grain_sqla": "P1M",
    "metrics": ["count"],
    "groupby": [],
    "adhoc_filters": [
        {
            "clause": "WHERE",
            "comparator": "No filter",
            "expressionType": "SIMPLE",
            "operator": "TEMPORAL_RANGE",
            "subject": "published_at",
        }
    ],
    "row_limit": 1000,
    "show_legend": False,
    "show_value": True,
    "x_axis_title": "month of published_at (UTC)",
    "x_axis_title_margin": 30,
    "y_axis_title": "articles",
    "y_axis_title_margin": 30,
    "x_axis_time_format": "%Y-%m",
    "color_scheme": "supersetColors",
    "orientation": "vertical",
    "zoomable": False,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "superset-chart.png"))
    parser.add_argument("--tz", default="America/New_York", help="time zone of the Superset process")
    args = parser.parse_args()

    t0 = time.perf_counter()
    venv, built = ensure_venv(REPO / ".venv-superset", local.REQUIREMENTS)
    print("superset venv: " + (f"built in {built:.0f} s" if built else "reused"), flush=True)
    with tempfile.TemporaryDirectory(prefix="superset-shot-") as tmp:
        root = Path(tmp)
        seeds, warehouse = root / "seeds", root / "warehouse"
        shutil.copytree(REPO / "seeds", seeds)
        subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "run", "--seeds", str(seeds), "--warehouse", str(warehouse)]
            + ["--orchestrator", "none", "--quiet"],
            cwd=REPO,
            check=True,
        )
        with local.LocalSuperset(venv.parent.parent, root / "superset", tz=args.tz) as server:
            database = server.add_database("seed-pipeline", warehouse / "catalog.duckdb")
            dataset = server.add_dataset(database, "articles")
            chart = server.add_chart("Articles per month", dataset, "echarts_timeseries_bar", CHART_PARAMS)
            subprocess.run(
                [
                    str(venv),
                    str(HERE / "browser_shot.py"),
                    server.url,
                    local.USER,
                    local.PASSWORD,
                    str(chart),
                    args.out,
                ],
                check=True,
                timeout=300,
            )
            print(f"superset set-up (s): {server.timings}")
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
