"""The project's one helper for side venvs: by default the baselines' .venv-bench, built from
bench/requirements.txt on first use; the BI tests build .venv-bi and .venv-bi-s3 with it too.

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
from pathlib import Path

import filelock

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "bench" / "requirements.txt"
VENV = REPO / ".venv-bench"
MARKER_NAME = ".requirements.sha256"


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
