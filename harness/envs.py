"""The project's one helper for side venvs: by default the baselines' .venv-bench, built from
bench/requirements.txt on first use; the BI tests build .venv-bi and .venv-bi-s3 with it too
(``TEST_VENVS``). ``python -m harness.envs`` builds the tests' ones, as .ci/run does while the
linters run, so that no test waits for a pip install.

A marker file holds a fingerprint of the requirements file, the Python version and the base
interpreter; the venv is reused while it matches and rebuilt otherwise. A file lock (one per venv
path) keeps two concurrent processes from building the same venv at once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import filelock

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "bench" / "requirements.txt"
VENV = REPO / ".venv-bench"
MARKER_NAME = ".requirements.sha256"
BI_VENV = REPO / ".venv-bi"  # SQLAlchemy + duckdb_engine + pandas over the catalog (tests/test_bi_clients.py)
BI_REQUIREMENTS = REPO / "tests" / "bi" / "requirements.txt"
BI_S3_VENV = REPO / ".venv-bi-s3"  # DuckDB 1.5.5 with httpfs and delta (tests/test_object_storage.py, delta_readers.py)
BI_S3_REQUIREMENTS = REPO / "tests" / "bi" / "requirements-s3.txt"
TEST_VENVS = ((BI_VENV, BI_REQUIREMENTS), (BI_S3_VENV, BI_S3_REQUIREMENTS))


def fingerprint(requirements: Path = REQUIREMENTS) -> str:
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(sys.version.encode())
    digest.update(os.path.realpath(getattr(sys, "_base_executable", sys.executable)).encode())
    return digest.hexdigest()


def _run(cmd: list[str], timeout: float) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")


def is_ready(venv: Path = VENV, requirements: Path = REQUIREMENTS) -> bool:
    """Whether VENV is built for REQUIREMENTS, so that ensure_venv would reuse it without building."""
    marker = venv / MARKER_NAME
    return (
        (venv / "bin" / "python").exists()
        and marker.exists()
        and marker.read_text().strip() == fingerprint(requirements)
    )


def ensure_venv(venv: Path = VENV, requirements: Path = REQUIREMENTS) -> tuple[Path, float | None]:
    """Interpreter of the bench venv, and the seconds spent building it (None when reused)."""
    python = venv / "bin" / "python"
    marker = venv / MARKER_NAME
    want = fingerprint(requirements)
    lock_name = f"seed-pipeline-venv-bench-{hashlib.sha256(str(venv).encode()).hexdigest()[:16]}.lock"
    with filelock.FileLock(os.path.join(tempfile.gettempdir(), lock_name), timeout=1800):
        if is_ready(venv, requirements):
            return python, None
        t0 = time.perf_counter()
        if venv.exists():
            shutil.rmtree(venv)
        _run([sys.executable, "-m", "venv", str(venv)], timeout=300)
        (venv / ".gitignore").write_text("*\n")  # keep the venv out of `git status`, as Python 3.13+ does
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"]
        _run([*pip, "-r", str(requirements)], timeout=1800)
        marker.write_text(want + "\n")  # last: a half-built venv has no marker and is rebuilt
        return python, time.perf_counter() - t0


def main() -> int:
    """Build (or reuse) the tests' side venvs side by side; one line each."""
    with ThreadPoolExecutor(len(TEST_VENVS)) as pool:
        built = list(pool.map(lambda pair: ensure_venv(*pair), TEST_VENVS))
    for (venv, _), (_, seconds) in zip(TEST_VENVS, built, strict=True):
        print(f"{venv.name}: " + ("reused" if seconds is None else f"built in {seconds:.0f} s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
