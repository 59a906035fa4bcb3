"""What a run shows while it works: a live progress bar on a terminal, plain lines elsewhere, or nothing.

On a terminal (stderr is a TTY): a bar for parsing with files done/total, files/s and the time
left, and one line per finished stage. Elsewhere (cron, CI, a log file): the same facts as
plain lines, at most every few seconds. ``--quiet``: nothing. The engine calls the three
methods below; it never knows which of these it talks to.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

PLAIN_EVERY = 5.0  # seconds between plain progress lines


class Reporter:
    """Receives a run's progress; this base class shows nothing (``--quiet``)."""

    def stage_started(self, name: str) -> None:
        pass

    def parsed(self, done: int, total: int) -> None:
        pass

    def stage_finished(self, name: str, seconds: float, detail: str = "") -> None:
        pass

    def close(self) -> None:
        pass


class PlainReporter(Reporter):
    """Lines for logs: parse progress every few seconds, one line per stage."""

    def __init__(self, out: IO[str] | None = None, every: float = PLAIN_EVERY) -> None:
        self.out = out or sys.stderr
        self.every = every
        self.last = 0.0
        self.t0 = time.monotonic()

    def _line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def stage_started(self, name: str) -> None:
        if name == "parse":
            self.t0 = time.monotonic()

    def parsed(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - self.last >= self.every:
            self.last = now
            rate = done / max(now - self.t0, 1e-9)
            eta = f", {(total - done) / rate:.0f} s left" if rate and done < total else ""
            self._line(f"parsed {done:,}/{total:,} files ({rate:,.0f} files/s{eta})")

    def stage_finished(self, name: str, seconds: float, detail: str = "") -> None:
        self._line(f"{name} done in {seconds:.1f} s" + (f": {detail}" if detail else ""))


class BarReporter(Reporter):
    """rich's live progress bar for parsing, and a line per finished stage above it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} files/s"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task: Any = None
        self.t0 = time.monotonic()

    def stage_started(self, name: str) -> None:
        if not self.progress.live.is_started:
            self.progress.start()
        if name == "parse":
            self.t0 = time.monotonic()
        self.task = self.progress.add_task(name, total=None, rate="-")

    def parsed(self, done: int, total: int) -> None:
        if self.task is not None:
            rate = done / max(time.monotonic() - self.t0, 1e-9)
            self.progress.update(self.task, completed=done, total=total, rate=f"{rate:,.0f}")

    def stage_finished(self, name: str, seconds: float, detail: str = "") -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        self.progress.console.print(f"[green]✓[/] {name} [dim]{seconds:.1f} s[/]" + (f"  {detail}" if detail else ""))

    def close(self) -> None:
        if self.progress.live.is_started:
            self.progress.stop()


def reporter(quiet: bool, stream: IO[str] | None = None) -> Reporter:
    """The reporter for this process: nothing when quiet, a bar on a terminal, plain lines otherwise."""
    stream = stream or sys.stderr
    if quiet:
        return Reporter()
    if stream.isatty():
        return BarReporter()
    return PlainReporter(stream)
