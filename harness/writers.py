"""Seed documents as real YAML writers write them: PyYAML (default and ``allow_unicode``), ruamel.yaml,
js-yaml and the npm ``yaml`` package, each in its default block style and in flow style.

Why: seed folders are written by tools, and each writer has its own style (escapes, folding, block
scalars, quoting, ``[]``); a fast path proven only on our own generator's documents is proven on one
style. The articles follow the seed document contract (``pipeline/schema.py``) and their text is
built from the hazards that change how YAML is written: quotes, backslashes, indicators inside text,
unicode from every plane, tabs and line breaks, long strings, text that looks like a number, a flag, a
null or a timestamp, and empty and nested lists. ``article`` takes a ``random.Random`` so that the
same builder serves a seeded benchmark corpus and hypothesis (``st.randoms()``) in the tests.

The npm writers run in one long-lived node process (``tests/writers/emit.mjs``, beside their
package.json and lock file); install them with ``npm ci --prefix tests/writers --no-audit --no-fund``.
Shared by tests/test_fast_yaml.py and bench/writers.py (so neither imports the other).
"""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parent.parent
NODE_DIR = REPO / "tests" / "writers"  # emit.mjs, package.json, package-lock.json and node_modules
NODE_WRITERS = ("js-yaml", "yaml")
PYTHON_WRITERS = ("pyyaml", "pyyaml-unicode", "ruamel")
WRITERS = PYTHON_WRITERS + NODE_WRITERS
STYLES = ("block", "flow")

# Pieces of text; each is there because some writer quotes, escapes or folds around it.
_WORDS = "the market rates policy growth data model energy climate vote court city budget tariff".split()
_UNICODE = ["é", "Ökonomie", "中文", "経済", "😀", "🤖", "\u00a0", "\u200b", "ñ", "Ω", "עברית", "العربية", "e\u0301"]
_HAZARDS = [
    '"',
    "'",
    "\\",
    '\\"',
    "\\n",
    ": ",
    ":",
    " #",
    "#",
    "!",
    "?",
    "%",
    "&",
    "*",
    "@",
    "`",
    "|",
    ">",
    "-",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "~",
    "=",
    "<<",
    "\t",
    "\n",
    "\n\n",
    "  ",
    "'it''s'",
    "C:\\path\\to",
    "100%",
    "AT&T",
    "Q&A?",
    "Wow!",
]
# Whole values that a writer must quote (or the reader would take them for something else).
_LOOKALIKES = [
    "null",
    "Null",
    "NULL",
    "~",
    "true",
    "false",
    "yes",
    "no",
    "on",
    "123",
    "0755",
    "0x1F",
    "1e5",
    "12.",
    ".5",
    "-1",
    "+1",
    ".inf",
    "2023-09-14",
    "2023-09-14T14:15:00+02:00",
    "- x",
    "? x",
    "x: y",
    "#x",
    "&a",
    "*a",
    "!x",
    "%x",
    "@x",
    "`x",
    "|",
    ">",
    "'",
    '"',
    " leading",
    "trailing ",
    "---",
    "...",
]
# For property-based generation (tests/test_fast_yaml.py): the pieces text is built from, and whole values.
PIECES: tuple[str, ...] = tuple(_WORDS + _UNICODE + _HAZARDS)
LOOKALIKES: tuple[str, ...] = tuple(_LOOKALIKES)
_DOMAINS = ["reuters.com", "wsj.com", "lemonde.fr", "elpais.com", "asia.nikkei.com", "bbc.com"]
_OFFSETS = ["Z", "+02:00", "-05:00", "+05:30", "+00:00"]


def _text(rng: random.Random, lo: int, hi: int) -> str:
    """Words mixed with hazards and unicode; sometimes a whole look-alike value."""
    if rng.random() < 0.08:
        return rng.choice(_LOOKALIKES)
    parts = []
    for _ in range(rng.randint(lo, hi)):
        roll = rng.random()
        if roll < 0.6:
            parts.append(rng.choice(_WORDS))
        elif roll < 0.8:
            parts.append(rng.choice(_UNICODE))
        elif roll < 0.97:
            parts.append(rng.choice(_HAZARDS))
        else:  # any code point a seed may hold (no controls, surrogates, U+2028/9, BOM, non-characters)
            parts.append(chr(rng.choice([rng.randint(0xA0, 0xD7FF), rng.randint(0xE000, 0xFDCF), 0x1F916])))
    sep = " " if rng.random() < 0.9 else ""
    return sep.join(parts)


def _title(rng: random.Random, lo: int, hi: int) -> str:
    """A headline the contract accepts: never empty or blank."""
    title = _text(rng, lo, hi)
    return title if title.strip() else "Headline " + title


def _timestamp(rng: random.Random) -> str:
    """RFC 3339 with one of several zones; sometimes a bare date or fractional seconds."""
    date = f"{rng.randint(2000, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if rng.random() < 0.1:
        return date
    time = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
    if rng.random() < 0.2:
        time += f".{rng.randint(0, 999999):06d}"
    return f"{date}T{time}{rng.choice(_OFFSETS)}"


def _url(rng: random.Random, domain: str) -> str:
    """An http(s) URL with the characters URLs bring into YAML: ':', '#', '&', '%', '?', '='."""
    path = "/".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
    url = f"https://www.{domain}/{path}-{rng.getrandbits(32):08x}"
    if rng.random() < 0.5:
        url += f"?id={rng.randint(1, 99999)}&ref=a%20b"
    if rng.random() < 0.2:
        url += "#section:2"
    return url


def _images(rng: random.Random, domain: str) -> list[dict[str, Any]]:
    return [
        {
            "url": _url(rng, "cdn." + domain),
            "width": rng.choice([0, 640, 1200, 1920]),
            "height": rng.choice([0, 360, 628, 1080]),
            "isCached": rng.random() < 0.5,
        }
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3]))
    ]


def _related(rng: random.Random) -> dict[str, Any]:
    domain = rng.choice(_DOMAINS)
    entry: dict[str, Any] = {
        "title": _text(rng, 3, 12),
        "excerpt": _text(rng, 10, 60),
        "publishedDateTime": _timestamp(rng),
        "webUrl": _url(rng, domain),
        "type": "article",
        "provider": {"name": _text(rng, 1, 3), "domain": domain},
        "quality": rng.randint(0, 100),
    }
    images = _images(rng, domain)
    if images or rng.random() < 0.5:
        entry["images"] = images  # an empty list too: `images: []`
    return entry


def article(rng: random.Random) -> dict[str, Any]:
    """One seed document's frontmatter, valid under the contract; its text varies with ``rng``."""
    domain = rng.choice(_DOMAINS)
    url = _url(rng, domain)
    doc: dict[str, Any] = {
        "category": rng.choice(["news", "business", "science", "sports"]),
        "title": _title(rng, 3, 16),
        "excerpt": _text(rng, 20, 90) if rng.random() < 0.9 else None,
        "publishedDateTime": _timestamp(rng),
        "originalUrl": url,
        "webUrl": url,
        "type": rng.choice(["article", "video", "opinion"]),
        "quality": rng.randint(0, 100),
        "heat": rng.choice([-1, 0, rng.randint(1, 5000)]),
        "published": rng.random() < 0.8,
        "provider": {"name": _text(rng, 1, 4), "domain": domain},
        "topics": [_title(rng, 1, 3) for _ in range(rng.choice([0, 0, 1, 3, 6]))],
        "images": _images(rng, domain),
        "related": [_related(rng) for _ in range(rng.choice([0, 1, 2, 3]))],
    }
    if rng.random() < 0.5:
        doc["ampWebUrl"] = url + "?amp"
    if rng.random() < 0.5:
        doc["secured"] = "".join(rng.choice("ABCxyz0189+/=;") for _ in range(rng.randint(20, 200)))
    return doc


def _pyyaml(doc: dict[str, Any], flow: bool, unicode: bool) -> str:
    return yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=unicode)


def _ruamel(doc: dict[str, Any], flow: bool) -> str:
    writer = YAML(typ="safe", pure=True)
    if flow:
        writer.default_flow_style = True
    out = io.StringIO()
    writer.dump(doc, out)
    return out.getvalue()


_PYTHON: dict[str, Callable[[dict[str, Any], bool], str]] = {
    "pyyaml": lambda doc, flow: _pyyaml(doc, flow, unicode=False),
    "pyyaml-unicode": lambda doc, flow: _pyyaml(doc, flow, unicode=True),
    "ruamel": _ruamel,
}


def node_available() -> bool:
    """Whether node and the npm writers (``npm ci --prefix tests/writers``) are installed."""
    return shutil.which("node") is not None and all(
        (NODE_DIR / "node_modules" / name).is_dir() for name in NODE_WRITERS
    )


class NodeWriters:
    """One node process that re-emits documents with js-yaml and npm ``yaml``, one line per request."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            ["node", str(NODE_DIR / "emit.mjs")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            cwd=NODE_DIR,
        )

    def emit_many(self, writer: str, docs: list[dict[str, Any]], flow: bool) -> list[str]:
        """All documents in one exchange (requests written by a thread so neither pipe fills up)."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        import threading

        def feed() -> None:
            assert self._proc.stdin is not None
            for doc in docs:
                self._proc.stdin.write(json.dumps({"writer": writer, "flow": flow, "doc": doc}) + "\n")
            self._proc.stdin.flush()

        feeder = threading.Thread(target=feed)
        feeder.start()
        out = [json.loads(self._proc.stdout.readline()) for _ in docs]
        feeder.join()
        return out

    def close(self) -> None:
        """End the node process (it exits at the end of its input)."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)


def emit(writer: str, docs: list[dict[str, Any]], flow: bool, node: NodeWriters | None = None) -> list[str]:
    """The documents' frontmatter as ``writer`` writes it (``node`` is needed for the npm writers)."""
    if writer in _PYTHON:
        return [_PYTHON[writer](doc, flow) for doc in docs]
    if node is None:
        raise ValueError(f"{writer} is an npm writer: pass a NodeWriters")
    return node.emit_many(writer, docs, flow)


def seed_file(frontmatter: str, body: str = "Body text.\n") -> str:
    """A seed file around a writer's frontmatter."""
    return f"---\n{frontmatter}---\n\n{body}"


def articles(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` articles from one seed: the same documents for every writer."""
    rng = random.Random(seed)
    return [article(rng) for _ in range(n)]
