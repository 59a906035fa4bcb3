"""The benchmark corpus: harness/generate.py's N documents for a seed, kept and reused under OUT.

OUT/corpus-N-seedS holds a hidden marker (discovery skips it) with N, the seed and the generator's
digest; the corpus is reused while the marker matches and says clean. ``changed_files`` rewrites the
1% sample the change rerun needs and restores the bytes afterwards (the marker says dirty meanwhile,
so an interrupted run regenerates the corpus next time). ``usual_day`` does the same for the usual
day of a news feed: 1% new articles and 0.5% edited ones, all published in the corpus's newest two
months (``UsualDay`` says which).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import generate

from .common import log

PER_FOLDER = 10_000  # harness.generate's default layout
CORPUS_MARKER = ".bench-corpus.json"  # hidden: discovery skips it
USUAL_DAY_FOLDER = "part-usual-day"  # where the usual day's new articles are written (and removed after)


def generator_digest() -> str:
    return hashlib.sha256(Path(generate.__file__).read_bytes()).hexdigest()


def ensure_corpus(out: Path, n: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """OUT/corpus-N-seedS, generated unless a complete, clean one for the same generator is there."""
    path = out / f"corpus-{n}-seed{seed}"
    marker = path / CORPUS_MARKER
    want = {"n": n, "seed": seed, "generator_sha256": generator_digest()}
    if marker.exists():
        meta = json.loads(marker.read_text())
        if {k: meta.get(k) for k in want} == want and not meta.get("dirty"):
            return path, {**meta, "generated_s": None}
    if path.exists():
        shutil.rmtree(path)
    log(f"generating {n} documents (seed {seed}) into {path}")
    t0 = time.perf_counter()
    size = generate.generate(str(path), n, seed, per_folder=PER_FOLDER)
    meta = {**want, "bytes": size, "dirty": False}
    marker.write_text(json.dumps(meta))
    return path, {**meta, "generated_s": time.perf_counter() - t0}


def doc_path(corpus: Path, i: int) -> Path:
    return corpus / f"part-{i // PER_FOLDER:04d}" / f"doc-{i:08d}.md"


def change_sample(n: int, seed: int) -> list[int]:
    """The 1% of documents the change rerun rewrites: same N and seed, same files."""
    return sorted(random.Random(f"bench-change-{seed}").sample(range(n), max(1, n // 100)))


_TITLE = re.compile(r"^title: (.*)$", re.M)
_PUBLISHED = re.compile(r"^publishedDateTime: (\S+)$", re.M)


def _retitled(text: str) -> str:
    """TEXT with its top-level title replaced by "Updated: <title>"."""
    title = _TITLE.search(text)
    assert title, "generated documents have a top-level title"
    return text[: title.start()] + f'title: "Updated: {title.group(1).strip(chr(34))}"' + text[title.end() :]


def changed_text(text: str) -> str:
    """A new title and a publishedDateTime one hour later (added when the document has none)."""
    text = _retitled(text)
    published = _PUBLISHED.search(text)
    if published:
        moment = datetime.fromisoformat(published.group(1)) + timedelta(hours=1)
        return text[: published.start(1)] + moment.isoformat() + text[published.end(1) :]
    end = _TITLE.search(text)
    assert end
    return text[: end.end()] + "\npublishedDateTime: 2024-12-31T12:00:00Z" + text[end.end() :]


@contextlib.contextmanager
def _dirty(corpus: Path) -> Iterator[None]:
    """The marker says dirty while the body runs, clean again after it (an interrupted run regenerates)."""
    marker = corpus / CORPUS_MARKER
    meta = json.loads(marker.read_text())
    marker.write_text(json.dumps({**meta, "dirty": True}))
    try:
        yield
    finally:
        marker.write_text(json.dumps({**meta, "dirty": False}))


@contextlib.contextmanager
def changed_files(corpus: Path, indices: list[int]) -> Iterator[int]:
    """Rewrite the sampled files; restore their bytes afterwards (the marker says dirty meanwhile)."""
    originals = {i: doc_path(corpus, i).read_bytes() for i in indices}
    with _dirty(corpus):
        try:
            for i, data in originals.items():
                doc_path(corpus, i).write_bytes(changed_text(data.decode("utf-8")).encode("utf-8"))
            yield len(originals)
        finally:
            for i, data in originals.items():
                doc_path(corpus, i).write_bytes(data)


@dataclass(frozen=True)
class UsualDay:
    """A news feed's usual day: NEW articles and the EDITED documents, all in the newest MONTHS (UTC)."""

    months: tuple[str, ...]
    edited: tuple[int, ...]
    new: int

    @property
    def files(self) -> int:
        return self.new + len(self.edited)


def published_month(text: str) -> str | None:
    """The UTC month (YYYY-MM) of a document's top-level publishedDateTime, the warehouse's partition."""
    found = _PUBLISHED.search(text)
    if not found:
        return None
    return datetime.fromisoformat(found.group(1)).astimezone(UTC).strftime("%Y-%m")


def usual_day_plan(corpus: Path, n: int, seed: int) -> UsualDay:
    """1% new articles and 0.5% edits (at least one each), drawn from the corpus's newest two months."""
    months = {i: published_month(doc_path(corpus, i).read_text(encoding="utf-8")) for i in range(n)}
    newest = tuple(sorted({m for m in months.values() if m})[-2:])
    candidates = [i for i, m in months.items() if m in newest]
    rng = random.Random(f"bench-usual-day-{seed}")
    edited = tuple(sorted(rng.sample(candidates, min(len(candidates), max(1, n // 200)))))
    return UsualDay(newest, edited, max(1, n // 100))


def _month_bounds(months: tuple[str, ...]) -> tuple[datetime, datetime]:
    """The first moment of the first month and of the month after the last one, UTC."""
    first = datetime.strptime(months[0], "%Y-%m").replace(tzinfo=UTC)
    last = datetime.strptime(months[-1], "%Y-%m").replace(tzinfo=UTC)
    return first, (last + timedelta(days=32)).replace(day=1)


def new_article(k: int, n: int, seed: int, months: tuple[str, ...]) -> str:
    """The generator's document number N + K (a URL no corpus document has), published inside MONTHS."""
    text = generate.document(n + k, n, seed)
    start, end = _month_bounds(months)
    span = int((end - start).total_seconds()) - 2 * 86400  # a day's margin at each end: no offset leaves MONTHS
    moment = start + timedelta(days=1, seconds=random.Random(f"bench-new-{seed}-{k}").randrange(span))
    stamp = moment.strftime("%Y-%m-%dT%H:%M:00Z")
    published = _PUBLISHED.search(text)
    if published:
        return text[: published.start(1)] + stamp + text[published.end(1) :]
    title = _TITLE.search(text)
    assert title
    return text[: title.end()] + f"\npublishedDateTime: {stamp}" + text[title.end() :]


@contextlib.contextmanager
def usual_day(corpus: Path, plan: UsualDay, n: int, seed: int) -> Iterator[int]:
    """Write the day's new articles and retitle its edited documents; afterwards the corpus is as it was."""
    originals = {i: doc_path(corpus, i).read_bytes() for i in plan.edited}
    folder = corpus / USUAL_DAY_FOLDER
    with _dirty(corpus):
        try:
            folder.mkdir()
            for k in range(plan.new):
                (folder / f"new-{k:08d}.md").write_text(new_article(k, n, seed, plan.months), encoding="utf-8")
            for i, data in originals.items():
                doc_path(corpus, i).write_bytes(_retitled(data.decode("utf-8")).encode("utf-8"))
            yield plan.files
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            for i, data in originals.items():
                doc_path(corpus, i).write_bytes(data)
