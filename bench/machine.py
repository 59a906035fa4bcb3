"""Facts about the machine a report was measured on: CPU, cores, RAM, OS, versions, load, commit."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from .common import MB, REPO


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    cpu = re.search(r"^model name\s*:\s*(.+)$", _read("/proc/cpuinfo"), re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.M)
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    git = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return {
        "cpu": cpu.group(1).strip() if cpu else platform.processor() or "unknown",
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "usable_cores": len(os.sched_getaffinity(0)),
        "ram_gib": int(mem.group(1)) / MB if mem else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_start": os.getloadavg(),
        "versions": {p: _version(p) for p in ("duckdb", "pyarrow", "prefect", "python-frontmatter", "PyYAML")},
        "commit": git.stdout.strip() or "unknown",
    }
