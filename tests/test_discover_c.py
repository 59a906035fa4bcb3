"""The C listing (pipeline/storage/_listing.c) against the Python loop it stands in for.

Both list the same generated folders (plain, hidden, unmatched, unicode, backslash and non-UTF-8
names, sub-folders, links inside and outside the seeds folder, dangling links, FIFOs, times beyond
int64 nanoseconds) with the same patterns; what discover() returns must be identical, entry for entry.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.read import discover as disc
from pipeline.storage import seeds
from pipeline.storage.location import Location

NAMES = [
    b"a.md",
    b"doc-0001.md",
    b"b.txt",
    b"c.markdown",
    b"\xc3\xa9t\xc3\xa9.md",  # été.md
    b"back\\slash.md",
    b"bad\xff.md",
    b"surrogate\xed\xa0\x80.md",  # an encoded surrogate: not UTF-8 to Python
    b"overlong\xc0\xaf.md",
    b"cut\xe2\x82",  # a sequence cut short at the end of the name
    b".hidden.md",
    b"x.MD",
    b"md",
    b"4byte\xf0\x9f\x98\x80.md",
    b"toolarge\xf4\x90\x80\x80.md",
]
KINDS = ["file", "file", "file", "folder", "link_inside", "link_outside", "dangling", "fifo", "far_future", "link_dir"]
PATTERNS = [("*.md",), ("*.md", "*.txt"), ("doc-*.md",), ("*",), ("*.m?",), ("*d",), ("*\\slash.md",)]

entries = st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(KINDS)), max_size=12)
tree = st.tuples(entries, st.lists(st.tuples(st.sampled_from(NAMES), entries), max_size=3))


def _make(folder: bytes, items: list[tuple[bytes, str]], outside: bytes) -> None:
    for name, kind in items:
        path = os.path.join(folder, name)
        if os.path.lexists(path):
            continue
        if kind == "folder":
            os.mkdir(path)
        elif kind == "link_inside":
            target = os.path.join(folder, b"target-inside.md")
            if not os.path.lexists(target):
                Path(os.fsdecode(target)).write_text("---\ntitle: t\n---\n")
            os.symlink(target, path)
        elif kind == "link_outside":
            os.symlink(outside, path)
        elif kind == "dangling":
            os.symlink(os.path.join(folder, b"nowhere"), path)
        elif kind == "link_dir":
            os.symlink(folder, path)
        elif kind == "fifo":
            os.mkfifo(path)
        else:
            with open(path, "wb") as fh:
                fh.write(b"---\ntitle: x\n---\n" * (len(name) % 3))
            if kind == "far_future":
                os.utime(path, ns=(0, 2**63 + 5))  # beyond int64 nanoseconds: stored as unknown


def _listing(root: str, patterns: tuple[str, ...]) -> tuple[list[tuple[object, ...]], list[object], list[object]]:
    found = disc.discover(Location.parse(root), patterns)
    return [tuple(f) for f in found.found()], found.refused, found.unlisted


@pytest.fixture(autouse=True)
def _built() -> None:
    assert seeds.scan_plain is not None, "the C listing was not built (pip install -e . compiles it; is gcc there?)"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=tree, patterns=st.sampled_from(PATTERNS))
def test_the_c_listing_finds_what_the_python_loop_finds(
    layout: tuple[list[tuple[bytes, str]], list[tuple[bytes, list[tuple[bytes, str]]]]],
    patterns: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    top, subfolders = layout
    with tempfile.TemporaryDirectory() as base:
        root = os.path.join(base, "seeds")
        os.mkdir(root)
        outside = os.fsencode(os.path.join(base, "outside.md"))
        Path(os.fsdecode(outside)).write_text("---\ntitle: o\n---\n")
        raw_root = os.fsencode(root)
        _make(raw_root, top, outside)
        for name, items in subfolders:
            sub = os.path.join(raw_root, name)
            if not os.path.lexists(sub):
                os.mkdir(sub)
            if os.path.isdir(sub) and not os.path.islink(sub):
                _make(sub, items, outside)
        in_c = _listing(root, patterns)
        with monkeypatch.context() as m:
            m.setattr(seeds, "scan_plain", None)
            in_python = _listing(root, patterns)
    assert in_c == in_python


def test_suffixes_are_used_only_where_they_mean_the_same_as_the_pattern() -> None:
    assert disc.suffixes(("*.md", "*.txt")) == (b".md", b".txt")
    assert disc.suffixes(("*",)) == (b"",)
    assert disc.suffixes(("*.m?",)) is None
    assert disc.suffixes(("doc-*.md",)) is None
    assert disc.suffixes(("*.[mM]d",)) is None
    assert disc.suffixes(("*.md", "*x*")) is None
    assert disc.suffixes(("*\udcff",)) is None  # not encodable: matched by name in Python


def test_a_folder_that_cannot_be_listed_is_an_error_of_that_folder(tmp_path: Path) -> None:
    gone = disc.list_folder(str(tmp_path), "gone/", str(tmp_path / "gone"), ("*.md",))
    assert isinstance(gone.error, FileNotFoundError) and gone.files.num_rows == 0
    (tmp_path / "file.md").write_text("x")
    not_a_folder = disc.list_folder(str(tmp_path), "file.md/", str(tmp_path / "file.md"), ("*.md",))
    assert isinstance(not_a_folder.error, NotADirectoryError)
