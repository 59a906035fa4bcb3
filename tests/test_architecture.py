"""The architecture, checked at run time as well as by import-linter (pyproject's contracts, run in CI)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

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


# What only pipeline/storage may call: the file system itself.
OS_FILE_CALLS = {
    "open", "replace", "rename", "link", "symlink", "unlink", "remove", "rmdir", "makedirs", "mkdir", "listdir",
    "scandir", "walk", "stat", "lstat", "fsync", "exists", "lexists", "isdir", "isfile", "islink", "realpath",
    "getsize", "readlink",
}  # fmt: skip


def _storage_leaks(path: str) -> list[str]:
    """``os``/``os.path`` file calls, builtin ``open`` and ``.local`` tests in one module's source."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    leaks = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            leaks.append(f"{path}:{node.lineno}: open()")
        if isinstance(node, ast.Attribute):
            base = ast.unparse(node.value)
            if base in ("os", "os.path") and node.attr in OS_FILE_CALLS:
                leaks.append(f"{path}:{node.lineno}: {base}.{node.attr}")
            if node.attr in ("local", "fs", "reader_fs", "bucket") and base != "threading":
                leaks.append(f"{path}:{node.lineno}: .{node.attr} (asks which kind of location)")
    return leaks


def test_the_warehouse_code_never_touches_files_or_asks_which_kind_of_storage() -> None:
    """commits, ledger, GC, catalog, merges, checks, Delta: only ``Location`` operations (pipeline/storage)."""
    modules = sorted((REPO / "pipeline" / "warehouse").glob("*.py"))
    assert len(modules) > 10
    leaks = [leak for module in modules for leak in _storage_leaks(str(module))]
    assert leaks == []


# The read and engine layers ask a seeds location which kind it is (a local folder is walked with the
# reader's link and FIFO rules), but their file calls go through pipeline/storage too. The one exception:
# fast_yaml points file descriptor 2 at /dev/null around rapidyaml (process plumbing, not storage).
ALLOWED = {"pipeline/read/fast_yaml.py": {"os.open"}}


def test_the_read_and_engine_layers_touch_files_only_through_storage() -> None:
    modules = sorted([*(REPO / "pipeline" / "read").glob("*.py"), *(REPO / "pipeline" / "engine").glob("*.py")])
    leaks = []
    for module in modules:
        rel = str(module.relative_to(REPO))
        for leak in _storage_leaks(str(module)):
            what = leak.split(": ", 1)[1]
            if what.startswith(".") or what in ALLOWED.get(rel, set()):
                continue  # asking the kind is allowed here (see above)
            leaks.append(leak)
    assert leaks == []


def test_the_leak_finder_finds_leaks(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import os\nos.replace('a', 'b')\nif wh.local:\n    open('x')\nos.environ.get('A')\n")
    assert sorted(leak.split(": ", 1)[1] for leak in _storage_leaks(str(sample))) == [
        ".local (asks which kind of location)",
        "open()",
        "os.replace",
    ]
