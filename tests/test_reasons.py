"""The registry of reject reasons is complete and used: every code the code can emit is declared once, none is dead."""

from __future__ import annotations

import ast
import json
import re

import pytest

from pipeline.read.problems import REASONS, STAGES, Problem, Retry, retried
from pipeline.schema import REJECTS

from .conftest import REPO

HOSTILE = REPO / "tests" / "data" / "hostile" / "EXPECTED.json"


def _codes_in_source() -> set[str]:
    """String literals that name a reason where a Problem is made (first argument of Problem, fail, _problem)."""
    found: set[str] = set()
    for path in (REPO / "pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            args = node.args[1:2] if name == "fail" else node.args[:1]
            if name in ("Problem", "_problem", "fail") and args and isinstance(args[0], ast.Constant):
                found.add(str(args[0].value))
    return found


def test_every_code_the_pipeline_emits_is_registered_and_every_registered_code_is_emitted() -> None:
    emitted = _codes_in_source()
    assert emitted == set(REASONS), (sorted(emitted - set(REASONS)), sorted(set(REASONS) - emitted))


def test_hostile_corpus_expectations_use_registered_codes_with_their_stage() -> None:
    expected = json.loads(HOSTILE.read_text(encoding="utf-8"))
    for name, outcome in expected.items():
        if isinstance(outcome, dict) and outcome.get("reason"):
            reason = REASONS[outcome["reason"]]
            assert outcome.get("stage", reason.stage) == reason.stage, name


def test_an_unregistered_code_cannot_be_used() -> None:
    with pytest.raises(ValueError, match="unregistered reject reason"):
        Problem("looks_bad", "nope")


def test_registry_entries_are_well_formed() -> None:
    for code, reason in REASONS.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", code) and reason.code == code
        assert reason.stage in STAGES and reason.action and reason.action[0].islower()
    assert set(retried(Retry.ALWAYS)) == {"unreadable", "parser_crash", "unexpected_error"}
    assert "stable reason code" in REJECTS.column("reason").description


def test_rejects_doc_lists_every_code() -> None:
    text = (REPO / "docs" / "rejects.md").read_text(encoding="utf-8")
    assert {m for m in re.findall(r"^\| `([a-z_0-9]+)` \|", text, flags=re.M)} == set(REASONS)
    assert "docs/rejects.md" in (REPO / "README.md").read_text(encoding="utf-8")
