"""All settings, read in one place: command-line values win over PIPELINE_* environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline.errors import ConfigError

DEFAULT_PATTERNS = ("*.md", "*.markdown", "*.txt")


@dataclass(frozen=True)
class Settings:
    seeds: str = "seeds"
    warehouse: str = "warehouse"
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    max_file_bytes: int = 5 * 1024 * 1024  # real seeds are ~5 KB
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    batch_size: int = 1000  # files per parse task; small folders get smaller batches
    wait_seconds: float = 0.0  # how long to wait for another run's lock
    gc_grace_seconds: float = 3600.0  # old snapshots outlive their replacement this long
    memory_limit: str = "1GB"  # DuckDB's budget while merging; it spills beyond

    def resolved(self) -> Settings:
        """Absolute paths; checks that fail early with a one-line message."""
        seeds = os.path.abspath(self.seeds)
        warehouse = os.path.abspath(self.warehouse)
        if not os.path.isdir(seeds):
            raise ConfigError(f"seeds folder not found: {self.seeds}")
        if os.path.commonpath([seeds, warehouse]) in (seeds,):
            raise ConfigError("the warehouse must not be inside the seeds folder")
        if not self.patterns or any(not p or "/" in p for p in self.patterns):
            raise ConfigError(f"file patterns must be non-empty names like *.md, got {self.patterns!r}")
        if self.max_file_bytes <= 0 or self.workers <= 0 or self.batch_size <= 0:
            raise ConfigError("max_file_bytes, workers and batch_size must be positive")
        return replace(self, seeds=seeds, warehouse=warehouse)


_ENV: dict[str, tuple[str, Any]] = {
    "PIPELINE_SEEDS": ("seeds", str),
    "PIPELINE_WAREHOUSE": ("warehouse", str),
    "PIPELINE_PATTERNS": ("patterns", lambda v: tuple(p.strip() for p in v.split(",") if p.strip())),
    "PIPELINE_MAX_FILE_BYTES": ("max_file_bytes", int),
    "PIPELINE_WORKERS": ("workers", int),
    "PIPELINE_BATCH_SIZE": ("batch_size", int),
    "PIPELINE_WAIT_SECONDS": ("wait_seconds", float),
    "PIPELINE_GC_GRACE_SECONDS": ("gc_grace_seconds", float),
    "PIPELINE_MEMORY_LIMIT": ("memory_limit", str),
}


def load_settings(overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Defaults, then PIPELINE_* variables, then explicit overrides (None means not given)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for var, (name, parse) in _ENV.items():
        if env.get(var):
            try:
                values[name] = parse(env[var])
            except ValueError:
                raise ConfigError(f"{var}={env[var]!r} is not valid") from None
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = tuple(value) if name == "patterns" else value
    return Settings(**values)
