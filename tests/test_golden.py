"""Golden files: each shipped seed in, the exact rows out (tests/golden/<seed>.json).

Regenerate after an intended change with `UPDATE_GOLDEN=1 pytest tests/test_golden.py`, review
the diff like code, and rerun without UPDATE_GOLDEN. In update mode the rows are still compared with
the golden file first: an unchanged file passes, a changed or missing one is written and the test
fails, so the variable can never turn the suite green without checking anything.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline import schema
from pipeline.read.extract import Loaded, extract, sha256
from pipeline.read.normalize import Source

from .conftest import SEEDS

GOLDEN = Path(__file__).parent / "golden"
SEED_FILES = sorted(p for p in SEEDS.rglob("*") if p.is_file() and not p.name.startswith("."))


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def rows_as_records(loaded: Loaded) -> dict[str, Any]:
    out: dict[str, Any] = {"article_id": loaded.rows.article_id, "month": loaded.rows.month}
    for table in schema.DOCUMENT_TABLES:
        names = table.column_names
        out[table.name] = [
            {n: _jsonable(v) for n, v in zip(names, row, strict=True)} for row in getattr(loaded.rows, table.name)
        ]
    out["unknown_keys"] = sorted(loaded.unknown_keys)
    return out


@pytest.mark.parametrize("path", SEED_FILES, ids=lambda p: str(p.relative_to(SEEDS)))
def test_seed_normalizes_to_golden_rows(path: Path) -> None:
    data = path.read_bytes()
    rel = path.relative_to(SEEDS).as_posix()
    result = extract(data, Source(rel, sha256(data)), "golden-run")
    assert isinstance(result, Loaded), asdict(result)  # type: ignore[arg-type]
    actual = rows_as_records(result)
    golden = GOLDEN / (rel.replace("/", "__") + ".json")
    shown = golden.relative_to(GOLDEN.parent.parent)
    expected = json.loads(golden.read_text(encoding="utf-8")) if golden.is_file() else None
    if expected is not None and actual == expected:
        return
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(json.dumps(actual, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
        pytest.fail(f"rewrote {shown}: review the diff and rerun without UPDATE_GOLDEN")
    if expected is None:
        pytest.fail(
            f"no golden file {shown} for seed {rel}: create it with "
            "`UPDATE_GOLDEN=1 pytest tests/test_golden.py`, review it, and rerun without UPDATE_GOLDEN"
        )
    assert actual == expected, f"{rel} no longer normalizes to {shown} (if intended: UPDATE_GOLDEN=1, review the diff)"


def test_every_golden_file_has_a_seed() -> None:
    names = {p.relative_to(SEEDS).as_posix().replace("/", "__") + ".json" for p in SEED_FILES}
    assert {p.name for p in GOLDEN.glob("*.json")} == names


def test_real_seed_values_exact() -> None:
    """The real seed from the brief, spot-checked by hand, independent of the golden files."""
    path = SEEDS / "000_0d86a7039b408f6d.txt"
    data = path.read_bytes()
    result = extract(data, Source(path.name, sha256(data)), "r")
    assert isinstance(result, Loaded)
    article = dict(zip(schema.ARTICLES.column_names, result.rows.articles[0], strict=True))
    assert article["title"] == "Artificial Empathy: A Human Construct Borrowed by AI"
    assert article["published_at"].isoformat() == "2023-10-08T16:23:00+00:00"
    assert article["quality"] == 59 and article["heat"] == -1 and article["is_published"] is False
    assert article["provider_domain"] == "psychologytoday.com"
    assert article["body"] is None and article["extra"] is None
    assert article["secured"].endswith(";J3iNI6pNvKtEaxkF8al2pg==")
    assert [t[2] for t in result.rows.article_topics] == ["AI in Healthcare", "AI"]
    assert result.rows.article_images == [
        (
            article["article_id"],
            0,
            "https://cdn2.psychologytoday.com/assets/styles/manual_crop_1_91_1_1528x800/public/"
            "field_blog_entry_images/2023-10/EmpathyEye.jpg?itok=pkjnVcC7",
            1528,
            800,
            True,
            None,
        )
    ]
    related = dict(zip(schema.RELATED_ARTICLES.column_names, result.rows.related_articles[0], strict=True))
    assert related["quality"] == 67 and related["provider_name"] == "Wall Street Journal"
    assert related["published_at"].isoformat() == "2023-10-07T12:02:00+00:00"
    assert result.rows.related_article_images[0][3:6] == ("https://images.wsj.net/im-864407/social", 607, 405)
