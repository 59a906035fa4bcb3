"""Find seed files: recursive, deterministic order, hidden entries skipped, no escape by links.

Symlinked folders are never followed (no loops, no escape). A symlinked file is
read only when its target lies inside the seeds folder; otherwise it is reported,
not silently skipped, so the run's accounting still adds up. FIFOs and devices
are reported too: opening one could hang the run.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import NamedTuple

from pipeline.read.problems import Problem


class Found(NamedTuple):
    """A file to consider; a tuple because a folder may hold millions of them."""

    rel: str  # '/'-separated path relative to the seeds folder
    size: int
    mtime_ns: int
    target: str | None = None  # resolved path when the entry is a symlink (inside the seeds folder)

    def path(self, root: str) -> str:
        return self.target or os.path.join(root, self.rel)


@dataclass(frozen=True)
class Refused:
    rel: str
    problem: Problem


def _display(name: str) -> str:
    """File names that are not valid UTF-8 are shown with backslash escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def discover(root: str, patterns: tuple[str, ...]) -> tuple[list[Found], list[Refused]]:
    """All matching files under ``root`` in byte order of their relative paths."""
    real_root = os.path.realpath(root)
    found: list[Found] = []
    refused: list[Refused] = []
    stack = [("", real_root)]
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                name = entry.name
                if name.startswith("."):
                    continue
                rel = f"{prefix}{name}"
                if entry.is_dir(follow_symlinks=False):
                    stack.append((f"{rel}/", entry.path))
                elif _matches(name, patterns):
                    item = _classify(entry, rel, real_root)
                    if isinstance(item, Found):
                        found.append(item)
                    else:
                        refused.append(item)
    found.sort(key=lambda f: f.rel.encode("utf-8", "surrogateescape"))
    refused.sort(key=lambda r: r.rel)
    return found, refused


def _classify(entry: os.DirEntry[str], rel: str, real_root: str) -> Found | Refused:
    shown = _display(rel)
    if shown != rel:
        return Refused(shown, Problem("read", "bad_file_name", "file name is not valid UTF-8; rename the file"))
    path, target = entry.path, None
    if entry.is_symlink():
        target = os.path.realpath(path)
        if os.path.commonpath([target, real_root]) != real_root:
            return Refused(
                rel,
                Problem("read", "link_outside_seeds", "symbolic link points outside the seeds folder; not followed"),
            )
        path = target
    try:
        st = entry.stat(follow_symlinks=False) if target is None else os.stat(path)
    except OSError as exc:
        return Refused(rel, Problem("read", "unreadable", f"cannot stat file: {exc.strerror}"))
    if not stat.S_ISREG(st.st_mode):
        return Refused(rel, Problem("read", "not_regular_file", "not a regular file (FIFO, device or folder)"))
    return Found(rel, st.st_size, st.st_mtime_ns, target)
