"""Locations as users write them: local paths, file:// and s3:// URLs; keys that name files the same way everywhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.storage.location import Location, relpath_ok


@pytest.mark.parametrize(
    ("text", "protocol", "root"),
    [
        ("s3://bucket/prefix", "s3", "bucket/prefix"),
        ("s3://bucket/prefix/", "s3", "bucket/prefix"),
        ("s3a://bucket/a/b", "s3", "bucket/a/b"),
        ("s3://bucket", "s3", "bucket"),
        ("file:///tmp/wh", "file", "/tmp/wh"),
    ],
)
def test_urls(text: str, protocol: str, root: str) -> None:
    loc = Location.parse(text)
    assert (loc.protocol, loc.root) == (protocol, root)


def test_relative_paths_resolve_against_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    loc = Location.parse("warehouse")
    assert loc.local and loc.root == os.path.join(str(tmp_path), "warehouse") and loc.url == loc.root


@pytest.mark.parametrize("text", ["", "gs://bucket/x", "s3://", "s3:///x", "s3://b/../x", "s3://b//x", "s3://b/./x"])
def test_refused_locations(text: str) -> None:
    with pytest.raises(ConfigError):
        Location.parse(text)


def test_s3_keys_and_urls() -> None:
    loc = Location.parse("s3://bucket/pre/fix")
    assert loc.bucket == "bucket" and loc.key("a b/ü.md") == "pre/fix/a b/ü.md"
    assert loc.join("data/x.parquet") == "s3://bucket/pre/fix/data/x.parquet"
    assert Location.parse("s3://bucket").key("x.md") == "x.md"
    assert loc.child("staging/r1").url == "s3://bucket/pre/fix/staging/r1"


def test_a_warehouse_inside_the_seeds_is_refused(tmp_path: Path) -> None:
    (tmp_path / "seeds").mkdir()
    with pytest.raises(ConfigError, match="inside the seeds"):
        Settings(seeds=str(tmp_path / "seeds"), warehouse=str(tmp_path / "seeds" / "wh")).resolved()
    with pytest.raises(ConfigError, match="inside the seeds"):
        Settings(seeds="s3://b/seeds", warehouse="s3://b/seeds/wh").resolved()
    Settings(seeds="s3://b/seeds", warehouse="s3://b/seeds-wh").resolved()  # a sibling prefix is fine


@given(st.lists(st.sampled_from(["a", "ü b", "..", ".", "", "x.md", "?v=1", "c%2F"]), min_size=1, max_size=5))
def test_only_keys_that_normalize_to_themselves_are_safe(parts: list[str]) -> None:
    rel = "/".join(parts)
    safe = relpath_ok(rel)
    assert safe == (all(p not in ("", ".", "..") for p in parts))
    if safe:
        assert os.path.normpath(rel) == rel  # every tool resolves it to the same name
