"""Which committed versions are kept for time travel, and garbage collection of the rest.

A version is *retained* while it is the newest, or one of the newest ``versions``, or younger
than ``seconds`` since it stopped being shown (its successor's commit, or the moment the
catalog stopped showing it, whichever is later, so a BI tool that still holds the old catalog
keeps its files for the whole period). Once a version expires, every older one has too: the
history readers see has no holes.

Garbage is what no retained version and no table's current Delta version names: expired
``commits/*.json`` (and their ``.retired`` stamps, local ``snapshots/<id>`` folders), their
data files, and data files no commit ever named (a killed or losing run's output) once they
are older than ``orphan_grace`` (a run still writing is never robbed of its files).
``data/<table>/_delta_log/`` is never touched: delta-rs keeps it bounded itself (checkpoints
every few versions, log entries older than the retention cleaned up after a checkpoint).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.errors import ConfigError
from pipeline.storage.location import Location
from pipeline.warehouse import commits
from pipeline.warehouse.commits import DATA, SNAPSHOTS, Snapshot

DEFAULT = "24h"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


@dataclass(frozen=True)
class Retention:
    """How long committed versions stay readable (``PIPELINE_RETENTION``): a duration, a count, or both."""

    seconds: float | None = 24 * 3600.0
    versions: int | None = None

    @classmethod
    def parse(cls, text: str) -> Retention:
        """``24h``, ``7d``, ``90m`` (a duration), ``48`` (versions), or both: ``7d,48`` (either keeps a version)."""
        seconds: float | None = None
        versions: int | None = None
        parts = [p.strip().lower() for p in text.split(",") if p.strip()]
        for part in parts:
            if part.isdigit() and versions is None:
                versions = int(part)
                continue
            match = _DURATION.fullmatch(part)
            if match is None or seconds is not None:
                raise ConfigError(
                    f"retention {text!r}: use a duration (24h, 7d, 90m), a number of versions (48), or both (7d,48)"
                )
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
        if not parts or versions == 0:
            raise ConfigError(f"retention {text!r}: keep at least one version, e.g. 24h or 48")
        return cls(seconds, versions)

    def keeps(self, rank: int, idle_seconds: float) -> bool:
        """``rank`` 0 is the newest version; ``idle_seconds``: since it stopped being shown."""
        if rank == 0:
            return True
        by_count = self.versions is not None and rank < self.versions
        by_age = self.seconds is not None and idle_seconds < self.seconds
        return by_count or by_age

    @property
    def log_seconds(self) -> float:
        """How long Delta log entries are kept: the duration, or a day when only a count is given."""
        return self.seconds if self.seconds is not None else 24 * 3600.0

    def __str__(self) -> str:
        parts = []
        if self.seconds is not None:
            parts.append(_human(self.seconds))
        if self.versions is not None:
            parts.append(f"{self.versions} versions")
        return " or ".join(parts)


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _retired_at(wh: Location, version: int) -> float:
    text = wh.read_text(commits.retired_name(version))
    try:
        return float(text) if text else 0.0
    except ValueError:
        return 0.0


def retained(wh: Location, retention: Retention, now: float | None = None) -> tuple[list[Snapshot], list[Snapshot]]:
    """(retained, expired) committed snapshots, newest first."""
    now = time.time() if now is None else now
    snaps = [s for s in (commits.read_version(wh, v) for v in reversed(commits.versions(wh))) if s is not None]
    keep: list[Snapshot] = []
    for rank, snap in enumerate(snaps):
        idle = 0.0 if rank == 0 else now - max(snaps[rank - 1].committed_at, _retired_at(wh, snap.version))
        if not retention.keeps(rank, idle):
            return keep, snaps[rank:]
        keep.append(snap)
    return keep, []


def _data_files(wh: Location) -> list[tuple[str, float]]:
    """(relative path, mtime in seconds) of every data file: ``data/<table>/<name>.parquet``, never the Delta logs."""
    out = []
    for entry in wh.list_files(DATA):
        parts = entry.rel.split("/")
        if len(parts) == 3 and parts[2].endswith(".parquet"):
            out.append((entry.rel, entry.mtime_ns / 1e9))
    return out


def collect_garbage(
    wh: Location,
    retention: Retention,
    orphan_grace: float,
    delta_current: Mapping[str, frozenset[str]],
    now: float | None = None,
) -> list[str]:
    """Delete expired versions and the files nothing retained names; returns what was deleted (relative paths).

    ``delta_current``: per table, the files (relative to the table root) its current Delta version
    names; they stay whatever the commits say. The caller holds the writer lock.
    """
    now = time.time() if now is None else now
    keep, expired = retained(wh, retention, now)
    live: set[str] = set()
    for snap in keep:
        for rels in snap.files.values():
            live.update(rels)
    for table, names in delta_current.items():
        live.update(f"{DATA}/{table}/{name}" for name in names)
    once_named = {rel for snap in expired for rels in snap.files.values() for rel in rels}
    removed = [
        name for snap in expired for name in (commits.commit_name(snap.version), commits.retired_name(snap.version))
    ]
    for rel, mtime in _data_files(wh):
        if rel not in live and (rel in once_named or now - mtime >= orphan_grace):
            removed.append(rel)
    removed += _stale_trees(wh, {s.id for s in keep})
    wh.delete(removed)
    return removed


def _stale_trees(wh: Location, kept_ids: set[str]) -> list[str]:
    """``snapshots/<id>`` folders (local disk) of versions no longer retained (hard links: no data is lost)."""
    keep = kept_ids | {commits.current_id(wh)}
    ids = set(wh.list_names(SNAPSHOTS))
    return [f"{SNAPSHOTS}/{sid}" for sid in sorted(ids - keep)]
