"""Deterministic corpus generator: N seed-shaped documents (~4.6 KB on average), seeded.

Realistic variation: list lengths, text lengths, non-ASCII text, optional fields,
Markdown bodies, offsets in timestamps, and related entries that point at other
documents of the corpus. Same N and seed -> byte-identical files.

    python -m bench.generate OUT_DIR -n 100000 [--seed 7]

Shared by the benchmarks (bench/corpus.py, bench/per_doc.py; ``bench.generate`` is the command line)
and the tests that draw ordinary documents from it (tests/test_fast_yaml.py, tests/test_contract_compiled.py).
"""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta

PROVIDERS = [
    ("Reuters", "reuters.com"),
    ("Wall Street Journal", "wsj.com"),
    ("Psychology Today", "psychologytoday.com"),
    ("Le Monde", "lemonde.fr"),
    ("Deutsche Welle", "dw.com"),
    ("BBC News", "bbc.com"),
    ("Nikkei Asia", "asia.nikkei.com"),
    ("El País", "elpais.com"),
    ("The Hindu", "thehindu.com"),
    ("Ars Technica", "arstechnica.com"),
    ("Associated Press", "apnews.com"),
    ("Bloomberg", "bloomberg.com"),
]
TOPICS = [
    "AI",
    "AI in Healthcare",
    "Economy",
    "Inflation",
    "Climate",
    "Energy",
    "Elections",
    "Football",
    "Cricket",
    "Semiconductors",
    "Space",
    "Health",
    "Privacy",
    "Startups",
    "Markets",
    "Écologie",
    "Künstliche Intelligenz",
    "人工知能",
    "Política",
    "Transport",
]
WORDS = (
    "the market rates policy growth data model research energy climate vote team season chip "
    "launch study health privacy court ruling city budget tariff supply chain demand outlook "
    "économie société énergie Wirtschaft Forschung política mercado 経済 市場 研究"
).split()
OFFSETS = ["Z", "+02:00", "-05:00", "+05:30", "+09:00", "+01:00", "-04:00"]
START = datetime(2021, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 4 * 365 * 86400


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
    return " ".join(words).capitalize()


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _timestamp(rng: random.Random) -> str:
    moment = START + timedelta(seconds=rng.randrange(SPAN_SECONDS))
    offset = rng.choice(OFFSETS)
    if offset == "Z":
        return moment.strftime("%Y-%m-%dT%H:%M:00Z")
    sign = 1 if offset[0] == "+" else -1
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    local = moment + sign * timedelta(hours=hours, minutes=minutes)
    return local.strftime("%Y-%m-%dT%H:%M:00") + offset


def url_of(i: int) -> str:
    name, domain = PROVIDERS[i % len(PROVIDERS)]
    return f"https://www.{domain}/news/{2021 + i % 4}/article-{i:08d}"


def _images(rng: random.Random, indent: str, domain: str, n: int) -> list[str]:
    lines = []
    for k in range(n):
        lines += [
            f'{indent}- url: "https://cdn.{domain}/img/{rng.getrandbits(40):010x}/{k}.jpg?w=1200"',
            f"{indent}  width: {rng.choice([640, 800, 1024, 1200, 1528, 1920])}",
            f"{indent}  height: {rng.choice([360, 405, 480, 628, 800, 1080])}",
            f"{indent}  isCached: {rng.choice(['true', 'false'])}",
        ]
    return lines


def document(i: int, n: int, seed: int) -> str:
    rng = random.Random(seed * 1_000_003 + i)
    name, domain = PROVIDERS[i % len(PROVIDERS)]
    url = url_of(i)
    lines = [
        "---",
        f"category: {rng.choice(['news', 'business', 'science', 'sports', 'technology'])}",
        f"title: {_q(_sentence(rng, 5, 14))}",
    ]
    if rng.random() < 0.9:
        lines.append(f"excerpt: {_q(_sentence(rng, 30, 80))}")
    if rng.random() < 0.95:
        lines.append(f"publishedDateTime: {_timestamp(rng)}")
    lines.append(f'originalUrl: "{url}"')
    lines.append(f'webUrl: "{url}"')
    if rng.random() < 0.6:
        lines.append(f'ampWebUrl: "{url}?amp"')
        lines.append(f'cdnAmpWebUrl: "https://www-{domain.replace(".", "-")}.cdn.ampproject.org/c/s/{url[8:]}?amp"')
    lines += [
        f"type: {rng.choice(['article', 'article', 'video', 'opinion'])}",
        f"quality: {rng.randint(0, 100)}",
        f"heat: {rng.choice([-1, 0, rng.randint(1, 5000)])}",
        f"published: {rng.choice(['true', 'false'])}",
        "",
        "provider:",
        f"  name: {name}",
        f"  domain: {domain}",
    ]
    topics = rng.sample(TOPICS, rng.randint(0, 6))
    if topics:
        lines += ["", "topics:"] + [f"  - {_q(t)}" for t in topics]
    n_images = rng.choice([0, 1, 1, 1, 2, 3])
    if n_images:
        lines += ["", "images:"] + _images(rng, "  ", domain, n_images)
    n_related = rng.choice([0, 1, 2, 2, 3, 4])
    if n_related:
        lines += ["", "related:"]
        for _ in range(n_related):
            j = rng.randrange(n) if rng.random() < 0.5 else n + rng.randrange(10 * n)
            rname, rdomain = PROVIDERS[j % len(PROVIDERS)]
            lines += [
                f"  - title: {_q(_sentence(rng, 5, 12))}",
                f"    excerpt: {_q(_sentence(rng, 15, 40))}",
                f"    publishedDateTime: {_timestamp(rng)}",
                f'    webUrl: "{url_of(j)}"',
                "    type: article",
                "    provider:",
                f"      name: {rname}",
                f"      domain: {rdomain}",
                f"    quality: {rng.randint(0, 100)}",
            ]
            k = rng.choice([0, 1, 1, 2])
            if k:
                lines += ["    images:"] + _images(rng, "      ", rdomain, k)
    lines += ["", f'secured: "{rng.randbytes(150).hex()}=="', "---"]
    if rng.random() < 0.7:
        body = "\n\n".join(_sentence(rng, 30, 90) + "." for _ in range(rng.randint(2, 6)))
        lines += ["", f"## {_sentence(rng, 3, 7)}", "", body]
        more = "\n\n".join(_sentence(rng, 30, 106) + "." for _ in range(rng.randint(1, 3)))
        lines += ["", f"### {_sentence(rng, 3, 7)}", "", more]
    return "\n".join(lines) + "\n"


def generate(out: str, n: int, seed: int = 7, per_folder: int = 10_000) -> int:
    """Write N documents into OUT (sub-folders of ``per_folder`` files); returns bytes written."""
    total = 0
    for i in range(n):
        folder = os.path.join(out, f"part-{i // per_folder:04d}")
        if i % per_folder == 0:
            os.makedirs(folder, exist_ok=True)
        data = document(i, n, seed).encode("utf-8")
        with open(os.path.join(folder, f"doc-{i:08d}.md"), "wb") as fh:
            fh.write(data)
        total += len(data)
    return total
