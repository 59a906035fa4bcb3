"""Measuring the benchmark's processes: one process tree's time and memory, pipeline loads, Prefect
start-up and the baselines.

Peak memory: every process of the tree is polled (psutil, every 0.1 s) for its kernel high-water
mark (VmHWM), so per-process peaks are exact; "tree" is the largest sum of RSS seen at one poll (it
counts shared pages once per process). ``wait4``'s ru_maxrss cross-checks the largest process.

Pipeline runs are timed twice: the whole process (wall) and the pipeline's own work, ``finished_at -
started_at`` of the run's ``load_runs`` row. The baselines (bench/baselines/) run in .venv-bench
(harness/envs.py), or in this interpreter for pandas when it is installed here.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from harness import envs

from .common import REPO, log
from .corpus import UsualDay, change_sample, changed_files, usual_day

BASELINES = REPO / "bench" / "baselines"
POLL_SECONDS = 0.1

# --- measuring one process tree -----------------------------------------------------------------


@dataclass
class Measured:
    cmd: list[str]
    returncode: int
    wall_s: float
    stdout: str
    log_path: str
    parent_peak_mb: float  # VmHWM of the process we started
    child_peak_mb: float  # largest VmHWM among its descendants (0 when it had none)
    tree_peak_mb: float  # largest sum of RSS over the tree at one poll
    maxrss_mb: float  # wait4 ru_maxrss: largest single process, per the kernel
    descendants: int  # distinct descendant processes seen

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        del data["stdout"]
        return data


def _status_kb(pid: int) -> tuple[int, int] | None:
    """(VmHWM, VmRSS) in KiB, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            text = fh.read()
    except OSError:
        return None
    hwm = rss = 0
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return hwm, rss


def _descendants(pid: int) -> list[int]:
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        pass
    except Exception:  # the process exited between polls
        return []
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def run_measured(
    cmd: list[str], log_path: Path, env: dict[str, str], cwd: Path | None = None, timeout: float = 7200
) -> Measured:
    """Run CMD to completion, polling its process tree's memory; stdout returned, stderr to LOG_PATH."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    peaks: dict[int, int] = {}
    tree_peak = 0
    done = threading.Event()
    with open(log_path, "wb") as err, open(str(log_path) + ".stdout", "w+b") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True)

        def poll() -> None:
            nonlocal tree_peak
            while not done.is_set():
                total = 0
                for pid in [proc.pid, *_descendants(proc.pid)]:
                    st = _status_kb(pid)
                    if st is not None:
                        peaks[pid] = max(peaks.get(pid, 0), st[0])
                        total += st[1]
                tree_peak = max(tree_peak, total)
                done.wait(POLL_SECONDS)

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            done.set()
            poller.join()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read().decode("utf-8", "replace")
    children = [kb for pid, kb in peaks.items() if pid != proc.pid]
    return Measured(
        cmd=cmd,
        returncode=proc.returncode,
        wall_s=wall,
        stdout=stdout,
        log_path=str(log_path),
        parent_peak_mb=peaks.get(proc.pid, 0) / 1024,
        child_peak_mb=max(children, default=0) / 1024,
        tree_peak_mb=tree_peak / 1024,
        maxrss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        descendants=len(children),
    )


def _check(m: Measured, what: str) -> None:
    if m.returncode != 0:
        tail = Path(m.log_path).read_text(errors="replace")[-3000:]
        raise SystemExit(f"bench: {what} exited {m.returncode}: {shlex.join(m.cmd)}\n{m.stdout[-2000:]}\n{tail}")


def _last_json(text: str) -> dict[str, Any]:
    """The JSON document a command printed (the pipeline's summary, a baseline's last line)."""
    text = text.strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = json.loads(text.splitlines()[-1])
    assert isinstance(data, dict)
    return data


# --- the pipeline -----------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without PIPELINE_* settings or a Prefect API/profile to talk to."""
    drop = ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE", "PREFECT_HOME")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_") and k not in drop}
    env.update(extra)
    return env


def pipeline_cmd() -> list[str]:
    script = Path(sys.executable).parent / "pipeline"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipeline.cli"]


def load_run_row(warehouse: Path, run_id: str) -> dict[str, Any]:
    files = sorted(glob.glob(str(warehouse / "current" / "load_runs" / "*.parquet")))
    rows = [r for f in files for r in pq.read_table(f).to_pylist() if r["run_id"] == run_id]
    if not rows:
        raise SystemExit(f"bench: run {run_id} has no load_runs row in {warehouse}")
    return rows[0]


@dataclass
class PipelineRun:
    label: str
    wall_s: float
    work_s: float
    files_parsed: int
    summary: dict[str, Any]
    memory: dict[str, Any] = field(default_factory=dict)


def run_pipeline(
    label: str,
    corpus: Path,
    warehouse: Path,
    logs: Path,
    orchestrator: str = "none",
    workers: int | None = None,
    env: dict[str, str] | None = None,
) -> PipelineRun:
    cmd = [*pipeline_cmd(), "run", "--seeds", str(corpus), "--warehouse", str(warehouse)]
    cmd += ["--orchestrator", orchestrator, "--format", "json", "--quiet"]
    if workers:
        cmd += ["--workers", str(workers)]
    m = run_measured(cmd, logs / f"{label}.log", env or clean_env(), cwd=warehouse.parent)
    _check(m, f"pipeline run ({label})")
    summary = _last_json(m.stdout)
    row = load_run_row(warehouse, summary["run_id"])
    work = (row["finished_at"] - row["started_at"]).total_seconds()
    return PipelineRun(label, m.wall_s, work, int(row["files_parsed"]), summary, m.summary())


def bench_pipeline(
    corpus: Path, n: int, seed: int, day: UsualDay, work: Path, repeat: int, workers: int | None
) -> tuple[dict[str, list[PipelineRun]], Path]:
    """Full load, no-op rerun, 1%-changed rerun and usual-day rerun, REPEAT times in fresh warehouses.

    After each rerun whose files are restored, an unmeasured run brings the warehouse back to the
    corpus, so that the next rerun parses only its own files and the warehouse queried after is the corpus's.
    """
    runs: dict[str, list[PipelineRun]] = {"full": [], "noop": [], "change": [], "usual": []}
    sample = change_sample(n, seed)
    logs = work / "logs"

    def measured(label: str, k: int, warehouse: Path) -> PipelineRun:
        run = run_pipeline(f"{label}-{k}", corpus, warehouse, logs, workers=workers)
        log(f"{label} {k + 1}/{repeat}: work {run.work_s:.2f} s, wall {run.wall_s:.2f} s")
        return run

    def settle(label: str, k: int, warehouse: Path) -> None:
        """An unmeasured run: the warehouse holds the corpus again after a rerun whose files were restored."""
        run_pipeline(f"settle-{label}-{k}", corpus, warehouse, logs, workers=workers)

    warehouse = work / "warehouse-0"
    for k in range(repeat):
        warehouse = work / f"warehouse-{k}"
        shutil.rmtree(warehouse, ignore_errors=True)
        runs["full"].append(measured("full", k, warehouse))
        runs["noop"].append(measured("noop", k, warehouse))
        with changed_files(corpus, sample):
            runs["change"].append(measured("change", k, warehouse))
        settle("change", k, warehouse)
        with usual_day(corpus, day, n, seed):
            runs["usual"].append(measured("usual", k, warehouse))
        settle("usual", k, warehouse)
        if k + 1 < repeat:
            shutil.rmtree(warehouse)  # keep only the last one (queried below)
    return runs, warehouse


def bench_prefect(corpus: Path, work: Path, workers: int | None) -> list[PipelineRun]:
    """Prefect's temporary server (PIPELINE_LOCAL_SERVER=0): a full load with a fresh Prefect home, then a
    no-op rerun. The default, a long-lived local server, is measured by ``bench.prefect_cost``."""
    home = work / "prefect-home"
    warehouse = work / "warehouse-prefect"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(warehouse, ignore_errors=True)
    home.mkdir(parents=True)
    env = clean_env(PREFECT_HOME=str(home), PIPELINE_LOCAL_SERVER="0")
    runs = []
    for label in ("prefect-full", "prefect-noop"):
        r = run_pipeline(label, corpus, warehouse, work / "logs", orchestrator="prefect", workers=workers, env=env)
        log(f"{label}: wall {r.wall_s:.2f} s, pipeline work {r.work_s:.2f} s")
        runs.append(r)
    shutil.rmtree(warehouse)
    return runs


# --- baselines -------------------------------------------------------------------------------------


@dataclass
class BaselineRun:
    tool: str
    wall_s: float
    inner_s: float
    docs: int
    rows: dict[str, int]
    versions: dict[str, str]
    python: str
    memory: dict[str, Any]


def baseline_ready(tool: str) -> bool:
    """Whether TOOL's baseline can run without building .venv-bench first (network, ~30 s)."""
    return (tool == "pandas" and importlib.util.find_spec("pandas") is not None) or envs.is_ready()


def baseline_python(tool: str, notes: list[str]) -> str:
    if tool == "pandas" and importlib.util.find_spec("pandas") is not None:
        return sys.executable
    python, built = envs.ensure_venv()
    if built is not None:
        notes.append(
            f"built {envs.VENV.name} from bench/requirements.txt in {built:.0f} s (before, and not part of, any timing)"
        )
    return str(python)


def bench_baseline(tool: str, corpus: Path, work: Path, repeat: int, notes: list[str]) -> list[BaselineRun]:
    script = BASELINES / {"pandas": "pandas_script.py", "dlt": "dlt_pipeline.py"}[tool]
    python = baseline_python(tool, notes)
    runs = []
    for k in range(repeat):
        dest = work / f"baseline-{tool}"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        env = clean_env(RUNTIME__DLTHUB_TELEMETRY="false", DLT_DATA_DIR=str(dest / ".dlt-data"))
        m = run_measured([python, str(script), str(corpus), str(dest)], work / "logs" / f"{tool}-{k}.log", env, dest)
        _check(m, f"{tool} baseline")
        out = _last_json(m.stdout)
        runs.append(
            BaselineRun(tool, m.wall_s, out["seconds"], out["docs"], out["rows"], out["versions"], python, m.summary())
        )
        log(f"{tool} baseline {k + 1}/{repeat}: wall {m.wall_s:.2f} s")
        shutil.rmtree(dest)
    return runs
