"""All settings, read in one place: command-line values win over PIPELINE_* environment variables.

``Settings`` is also what a Prefect run of `ingest` receives: ``to_parameters`` turns it into the
flow's parameters (every field, under its own name) and ``from_parameters`` turns them back, so a
setting takes effect the same way with ``--orchestrator none``, on the default Prefect path, in
``serve``/deployments and on Dask workers (which get the resolved values inside their specs).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from pipeline.errors import ConfigError
from pipeline.storage.location import Location
from pipeline.warehouse.retention import Retention

_MEMORY = re.compile(r"^\d+(\.\d+)?\s*(%|B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)
DEFAULT_PATTERNS = ("*.md", "*.markdown", "*.txt")
RUNNERS = ("processes", "dask")


@dataclass(frozen=True)
class Settings:
    seeds: str = "seeds"  # a folder, file:///folder or s3://bucket/prefix
    warehouse: str = "warehouse"  # likewise
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    max_file_bytes: int = 5 * 1024 * 1024  # real seeds are ~5 KB
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    batch_size: int = 1000  # files per parse task; small folders get smaller batches
    wait_seconds: float = 0.0  # how long to wait for another run's lock
    gc_grace_seconds: float = 3600.0  # files no commit names (a killed run's output) are kept this long
    # Committed versions kept for time travel (`pipeline history`, `query --as-of`, Delta readers):
    # a duration (24h, 7d), a number of versions (48), or both (7d,48): either keeps a version.
    retention: str = "24h"
    # DuckDB's budget in the run's process (merges share it; the checks and providers get it whole);
    # it spills to disk beyond. With the run's own Arrow data this keeps a 1M-document load under 1 GB.
    memory_limit: str = "512MB"
    runner: str = "processes"  # where parsing and merges run: local processes, or a Dask cluster
    dask_address: str | None = None  # tcp://host:port of a running Dask scheduler; None starts a LocalCluster
    # Extra s3fs options as JSON, e.g. {"key": ..., "secret": ...}; without keys here, s3fs reads
    # AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials (endpoint: AWS_ENDPOINT_URL).
    storage_options: str = "{}"
    lease_seconds: float = 60.0  # object stores: a writer lease not renewed for this long can be taken over

    def resolved(self) -> Settings:
        """Absolute local paths (URLs kept); checks that fail early with a one-line message."""
        seeds, warehouse = self.seeds_location(), self.warehouse_location()
        if seeds.local and not os.path.isdir(seeds.root):
            raise ConfigError(f"seeds folder not found: {self.seeds}")
        if seeds.contains(warehouse):
            raise ConfigError("the warehouse must not be inside the seeds folder")
        if not self.patterns or any(not p or "/" in p for p in self.patterns):
            raise ConfigError(f"file patterns must be non-empty names like *.md, got {self.patterns!r}")
        if self.max_file_bytes <= 0 or self.workers <= 0 or self.batch_size <= 0:
            raise ConfigError("max_file_bytes, workers and batch_size must be positive")
        if not _MEMORY.match(self.memory_limit.strip()):
            raise ConfigError(f"memory limit {self.memory_limit!r}: use a size such as 1GB, 512MB or 50%")
        self.retention_policy()  # raises ConfigError with the accepted forms
        if self.runner not in RUNNERS:
            raise ConfigError(f"unknown runner {self.runner!r}: use {' or '.join(RUNNERS)}")
        return replace(self, seeds=seeds.url, warehouse=warehouse.url)

    def _options(self) -> dict[str, Any]:
        try:
            value = json.loads(self.storage_options or "{}")
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise ConfigError(f"storage options must be a JSON object, got {self.storage_options!r}")
        return value

    def retention_policy(self) -> Retention:
        return Retention.parse(self.retention)

    def seeds_location(self) -> Location:
        return Location.parse(self.seeds, self._options())

    def warehouse_location(self) -> Location:
        return Location.parse(self.warehouse, self._options())


# Every setting is a parameter of the flow `ingest`, under its own name (a test checks the signature).
FLOW_PARAMETERS = tuple(f.name for f in fields(Settings))
# Settings that may hold credentials: a run receives them as a pydantic ``SecretStr``, which Prefect's
# API and UI show as '**********'; parameters stored on a server (deployments) leave them out.
SECRET_SETTINGS = ("storage_options",)


def to_parameters(settings: Settings, secrets: bool = True) -> dict[str, Any]:
    """``settings`` as the parameters of a Prefect run of `ingest` (JSON values; secrets as ``SecretStr``).

    ``secrets=False`` (a deployment: its parameters are stored in clear, and a stored ``SecretStr``
    comes back as '**********') leaves the secret settings out: the runs read them from their
    PIPELINE_* variables instead.
    """
    from pydantic import SecretStr

    out: dict[str, Any] = {}
    for name in FLOW_PARAMETERS:
        value = getattr(settings, name)
        if name in SECRET_SETTINGS:
            value = SecretStr(value) if secrets and value != Settings().storage_options else None
        elif isinstance(value, tuple):
            value = list(value)
        out[name] = value
    return out


def from_parameters(parameters: dict[str, Any], environ: dict[str, str] | None = None) -> Settings:
    """The inverse of ``to_parameters``; a parameter left None takes the PIPELINE_* variable of the
    process that runs the flow, then the default (as with ``load_settings``)."""
    unknown = set(parameters) - set(FLOW_PARAMETERS)
    if unknown:
        raise ConfigError(f"not settings: {', '.join(sorted(unknown))}")
    plain = {k: v.get_secret_value() if hasattr(v, "get_secret_value") else v for k, v in parameters.items()}
    return load_settings(plain, environ)


def _patterns(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


_ENV: dict[str, tuple[str, Any]] = {
    "PIPELINE_SEEDS": ("seeds", str),
    "PIPELINE_WAREHOUSE": ("warehouse", str),
    "PIPELINE_PATTERNS": ("patterns", _patterns),
    "PIPELINE_MAX_FILE_BYTES": ("max_file_bytes", int),
    "PIPELINE_WORKERS": ("workers", int),
    "PIPELINE_BATCH_SIZE": ("batch_size", int),
    "PIPELINE_WAIT_SECONDS": ("wait_seconds", float),
    "PIPELINE_GC_GRACE_SECONDS": ("gc_grace_seconds", float),
    "PIPELINE_RETENTION": ("retention", str),
    "PIPELINE_MEMORY_LIMIT": ("memory_limit", str),
    "PIPELINE_RUNNER": ("runner", str),
    "PIPELINE_DASK_ADDRESS": ("dask_address", str),
    "PIPELINE_STORAGE_OPTIONS": ("storage_options", str),
    "PIPELINE_LEASE_SECONDS": ("lease_seconds", float),
}


# PIPELINE_* variables that are not settings of a run (documented in the README).
OTHER_VARIABLES = {
    "PIPELINE_SERVER_HOME": "folder of the local Prefect server (database, log, state)",
    "PIPELINE_LOCAL_SERVER": "0 to use Prefect's temporary server instead of the local one",
}


def environment_warning(environ: dict[str, str] | None = None) -> str | None:
    """One line naming every PIPELINE_* variable that changes a default (or is not a setting at all).

    A variable left in a shell or a crontab changes runs silently otherwise. Test hooks
    (PIPELINE_FAULT_*, see ``pipeline/faults.py``) are not settings and are not listed.
    """
    env = os.environ if environ is None else environ
    defaults = Settings()
    changed, unknown = [], []
    for var in sorted(k for k in env if k.startswith("PIPELINE_") and not k.startswith("PIPELINE_FAULT_")):
        if var not in _ENV:
            if var not in OTHER_VARIABLES:
                unknown.append(var)
            continue
        name, parse = _ENV[var]
        try:
            value = parse(env[var])
        except ValueError:
            continue  # load_settings reports it as an error
        if env[var] and value != getattr(defaults, name):
            changed.append(f"{var}={env[var]} ({name}; default {getattr(defaults, name)})")
    parts = []
    if changed:
        parts.append("settings from the environment: " + ", ".join(changed))
    if unknown:
        parts.append(f"not settings, ignored: {', '.join(unknown)}")
    return "; ".join(parts) or None


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
