"""What a run shows while it works: plain lines off a terminal, a live bar on one, nothing with --quiet."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from .conftest import REPO, cli_env, run_pipeline

STAGE_LINES = ("plan done in", "parse done in", "resolve done in", "build done in", "check done in", "publish done in")


def test_plain_lines_when_stderr_is_not_a_terminal(seeds: Path, warehouse: Path) -> None:
    err = run_pipeline(seeds, warehouse).stderr  # --quiet
    assert err == ""
    args = [sys.executable, "-m", "pipeline.cli", "run", "--orchestrator", "none", "--seeds", str(seeds),
            "--warehouse", str(warehouse / "second")]  # fmt: skip
    proc = subprocess.run(args, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120, check=True)
    lines = proc.stderr.splitlines()
    positions = [next(i for i, line in enumerate(lines) if line.startswith(s)) for s in STAGE_LINES]
    assert positions == sorted(positions), lines  # one line per stage, in order
    assert "plan done in" in proc.stderr and ": 15 files seen, 15 to read" in proc.stderr
    assert any(line.startswith("parsed 15/15 files (") and "files/s" in line for line in lines), lines
    assert "\x1b[" not in proc.stderr  # no terminal control codes in a log
    assert proc.stdout.startswith("run ")  # the summary stays on stdout


def test_a_live_bar_on_a_terminal(seeds: Path, warehouse: Path) -> None:
    primary, secondary = pty.openpty()
    args = [sys.executable, "-m", "pipeline.cli", "run", "--orchestrator", "none", "--seeds", str(seeds),
            "--warehouse", str(warehouse)]  # fmt: skip
    env = cli_env(COLUMNS="100", TERM="xterm")
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=secondary, text=True)
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out, _ = proc.communicate(timeout=120)
    os.close(primary)
    shown = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0 and out.startswith("run ")
    assert "✓" in shown and "plan" in shown and "publish" in shown  # a line per finished stage
    assert "\x1b[" in shown  # rendered for a terminal (rich's live display), not plain log lines
    assert "done in" not in shown
