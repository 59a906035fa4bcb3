"""The benchmark corpus: harness/generate.py's N documents for a seed, kept and reused under OUT.

OUT/corpus-N-seedS holds a hidden marker (discovery skips it) with N, the seed and the generator's
digest; the corpus is reused while the marker matches and says clean. ``changed_files`` rewrites the
1% sample the change rerun needs and restores the bytes afterwards (the marker says dirty meanwhile,
so an interrupted run regenerates the corpus next time).
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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from harness import generate

from .common import log

PER_FOLDER = 10_000  # harness.generate's default layout
CORPUS_MARKER = ".bench-corpus.json"  # hidden: discovery skips it


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


def changed_text(text: str) -> str:
    """A new title and a publishedDateTime one hour later (added when the document has none)."""
    title = _TITLE.search(text)
    assert title, "generated documents have a top-level title"
    text = text[: title.start()] + f'title: "Updated: {title.group(1).strip(chr(34))}"' + text[title.end() :]
    published = _PUBLISHED.search(text)
    if published:
        moment = datetime.fromisoformat(published.group(1)) + timedelta(hours=1)
        return text[: published.start(1)] + moment.isoformat() + text[published.end(1) :]
    end = _TITLE.search(text)
    assert end
    return text[: end.end()] + "\npublishedDateTime: 2024-12-31T12:00:00Z" + text[end.end() :]


@contextlib.contextmanager
def changed_files(corpus: Path, indices: list[int]) -> Iterator[int]:
    """Rewrite the sampled files; restore their bytes afterwards (the marker says dirty meanwhile)."""
    marker = corpus / CORPUS_MARKER
    meta = json.loads(marker.read_text())
    originals = {i: doc_path(corpus, i).read_bytes() for i in indices}
    marker.write_text(json.dumps({**meta, "dirty": True}))
    try:
        for i, data in originals.items():
            doc_path(corpus, i).write_bytes(changed_text(data.decode("utf-8")).encode("utf-8"))
        yield len(originals)
    finally:
        for i, data in originals.items():
            doc_path(corpus, i).write_bytes(data)
        marker.write_text(json.dumps({**meta, "dirty": False}))
