"""The architecture, checked at run time as well as by import-linter (pyproject's contracts, run in CI)."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys

from pipeline.config import Settings
from pipeline.engine.stages import STAGES

from .conftest import REPO

CORE = (
    "pipeline.engine.stages",
    "pipeline.engine.validate",
    "pipeline.warehouse.query",
    "pipeline.warehouse.status",
    "pipeline.warehouse.catalog",
    "pipeline.cli",
)


def test_core_modules_never_load_prefect_or_dask() -> None:
    """Importing the engine, the warehouse readers and the CLI loads neither Prefect nor Dask."""
    code = (
        "import sys, importlib\n"
        f"for m in {CORE!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'prefect_dask', 'dask', 'distributed')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_flow_takes_every_setting() -> None:
    """Compared with the dataclass itself, not with FLOW_PARAMETERS (which is derived from it): a setting
    added to Settings but not to the flow's signature fails here."""
    from pipeline.orchestration.flow import ingest

    assert set(inspect.signature(ingest.fn).parameters) == {f.name for f in dataclasses.fields(Settings)}


def test_flow_tasks_are_the_engine_stages() -> None:
    from pipeline.orchestration.flow import STAGE_TASKS

    assert [t.name for t in STAGE_TASKS.values()] == [s.name for s in STAGES]
    assert [s.name for s in STAGES] == ["plan", "parse", "resolve", "build", "check", "publish"]


def test_what_prefect_ships_to_dask_workers_pickles() -> None:
    """Prefect pickles the flow and the submitting task (with what their code names) into every task it
    submits to Dask: live objects reachable from them (a lock, a ContextVar, a pool) break --runner dask."""
    import cloudpickle

    from pipeline.orchestration import flow

    for obj in (flow.ingest, *flow.STAGE_TASKS.values(), flow.parse_batch, flow.merge_months):
        cloudpickle.dumps(obj)
