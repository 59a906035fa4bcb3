"""Pure normalization: one checked document in, rows for every document table out.

No clock, no randomness, no I/O: the run id and source facts are passed in, and
keys are hashes of content, so the same document always gives the same rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pipeline.read.contract import Checked

UNDATED = "undated"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Source:
    """Where a document came from."""

    path: str  # relative to the seeds folder, '/'-separated
    sha256: str


def short_hash(text: str) -> str:
    """First 64 bits of SHA-256 as 16 hex digits: stable ids that fit any tool."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def canonical_url(url: str) -> str:
    """Identity form of a URL: trimmed, scheme and host lower-cased, default port and fragment dropped.

    Path and query are kept as written: they are case-sensitive on most servers.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{parts.port}"
    if parts.username or parts.password:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        host = f"{userinfo}@{host}"
    return urlunsplit((scheme, host, parts.path or "/", parts.query, ""))


def article_id(url: str) -> str:
    return short_hash(canonical_url(url))


def provider_id(domain: str) -> str:
    return short_hash(domain.strip().lower())


def month_of(ts: datetime | None) -> str:
    """Partition key: publication month in UTC."""
    return UNDATED if ts is None else f"{ts.year:04d}-{ts.month:02d}"


def _extra(entry: dict[str, Any]) -> str | None:
    """Unknown keys of this entry and of its provider, as canonical JSON."""
    extra = dict(entry.get("__extra__") or {})
    provider = entry.get("provider") or {}
    if provider.get("__extra__"):
        extra["provider"] = dict(provider["__extra__"])
    if not extra:
        return None
    return json.dumps(extra, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _provider(entry: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(provider_id, domain as written, name as written)."""
    provider = entry.get("provider") or {}
    domain = provider.get("domain")
    return (provider_id(domain) if domain else None, domain, provider.get("name"))


@dataclass(frozen=True)
class Rows:
    """Rows of one document, as tuples in each table's column order."""

    article_id: str
    month: str
    articles: list[tuple[Any, ...]]
    article_topics: list[tuple[Any, ...]]
    article_images: list[tuple[Any, ...]]
    related_articles: list[tuple[Any, ...]]
    related_article_images: list[tuple[Any, ...]]


def identity_url(values: dict[str, Any]) -> str:
    return values.get("webUrl") or values["originalUrl"]


def _image_row(prefix: tuple[Any, ...], img: dict[str, Any]) -> tuple[Any, ...]:
    return (*prefix, img.get("url"), img.get("width"), img.get("height"), img.get("isCached"), _extra(img))


def normalize(doc: Checked, body: str, source: Source, run_id: str) -> Rows:
    """Rows for one document that met the contract."""
    v = doc.values
    aid = article_id(identity_url(v))
    published_at = v.get("publishedDateTime")
    pid, pdomain, pname = _provider(v)
    article = (
        aid,
        v.get("webUrl"),
        v.get("originalUrl"),
        v.get("ampWebUrl"),
        v.get("cdnAmpWebUrl"),
        v["title"],
        v.get("excerpt"),
        v.get("category"),
        v.get("type"),
        published_at,
        v.get("quality"),
        v.get("heat"),
        v.get("published"),
        pid,
        pdomain,
        pname,
        v.get("secured"),
        body or None,
        _extra(v),
        source.path,
        source.sha256,
        run_id,
    )
    topics = [(aid, i, t) for i, t in enumerate(v.get("topics") or [])]
    images = [_image_row((aid, i), img) for i, img in enumerate(v.get("images") or [])]
    related = []
    related_images: list[tuple[Any, ...]] = []
    for r, rel in enumerate(v.get("related") or []):
        rpid, rpdomain, rpname = _provider(rel)
        related.append(
            (
                aid,
                r,
                article_id(rel["webUrl"]),
                rel["webUrl"],
                rel.get("title"),
                rel.get("excerpt"),
                rel.get("publishedDateTime"),
                rel.get("type"),
                rel.get("quality"),
                rpid,
                rpdomain,
                rpname,
                _extra(rel),
            )
        )
        related_images.extend(_image_row((aid, r, i), img) for i, img in enumerate(rel.get("images") or []))
    return Rows(aid, month_of(published_at), [article], topics, images, related, related_images)
