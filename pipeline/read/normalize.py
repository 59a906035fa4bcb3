"""Pure normalization: one checked document in, rows for every document table out.

No clock, no randomness, no I/O: the run id and source facts are passed in, and keys are
hashes of content, so the same document always gives the same rows.

The row builder is generated from the tables' declarations (``pipeline/schema.py``): each
column's value comes from its frontmatter field or its derivation, by name. Generating it
as Python source once, rather than interpreting the declarations for every document, keeps
normalization as cheap as a hand-written function.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import idna

from pipeline import schema
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


def canonical_host(host: str) -> str:
    """One spelling per host name: trimmed, lower case, no trailing dot, international names as IDNA.

    ``EXAMPLE.org.`` and ``example.org`` are one host, and so are ``bücher.de`` and
    ``xn--bcher-kva.de`` (UTS #46 mapping, as browsers do). A name IDNA refuses (e.g. with
    characters no registry allows) keeps its lower-case form.
    """
    name = host.strip().lower()
    if name.endswith(".") and len(name) > 1:
        name = name[:-1]
    if name.isascii():
        return name
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return name


def ipv6_text(address: str) -> str:
    """One spelling per IPv6 address (RFC 5952): lower-case hex, no leading zeros, the longest run of zeros as ``::``.

    Written out here rather than taken from ``ipaddress`` (whose text of IPv4-mapped addresses
    changed in Python 3.13), so an id never changes with the Python version. Text that is no
    IPv6 address (the contract refuses it) keeps its lower-case form.
    """
    try:
        packed = ipaddress.IPv6Address(address).packed
    except ValueError:
        return address.lower()
    groups = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2)]
    best, best_len, i = -1, 1, 0  # a single zero group is not shortened
    while i < 8:
        j = i
        while j < 8 and groups[j] == 0:
            j += 1
        if j - i > best_len:
            best, best_len = i, j - i
        i = j + 1 if j == i else j
    hexes = [f"{g:x}" for g in groups]
    if best < 0:
        return ":".join(hexes)
    return ":".join(hexes[:best]) + "::" + ":".join(hexes[best + best_len :])


# Lower-case http(s), a lower-case ASCII host without port, user or trailing dot, no white space:
# the common URL, whose canonical form needs no parsing (tests/test_contract_compiled.py compares both ways).
_PLAIN_URL = re.compile(
    r"(https?)://([a-z0-9-]+(?:\.[a-z0-9-]+)*)(/[^?#\s\x00-\x1f\x7f-\x9f]*)?(?:\?([^#\s\x00-\x1f\x7f-\x9f]*))?(?:#[^\s\x00-\x1f\x7f-\x9f]*)?"
).fullmatch


def canonical_url(url: str) -> str:
    """Identity form of a URL: trimmed, scheme and host canonical, default port and fragment dropped.

    An IPv6 host keeps its brackets (``[2001:db8::1]:8080`` and ``[2001:db8::1:8080]`` are two hosts)
    and is written as ``ipv6_text`` spells it.

    Path and query are kept as written: they are case-sensitive on most servers.
    """
    plain = _PLAIN_URL(url)
    if plain:  # already canonical but for the path, query and fragment: what urlsplit would find
        scheme, host, path, query = plain.groups()
        return f"{scheme}://{host}{path or '/'}?{query}" if query else f"{scheme}://{host}{path or '/'}"
    return parsed_canonical_url(url)


def parsed_canonical_url(url: str) -> str:
    """``canonical_url`` by way of urlsplit (the path every URL but the plain ones takes)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    hostname = parts.hostname or ""
    host = f"[{ipv6_text(hostname)}]" if ":" in hostname else canonical_host(hostname)
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{parts.port}"
    if parts.username or parts.password:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        host = f"{userinfo}@{host}"
    return urlunsplit((scheme, host, parts.path or "/", parts.query, ""))


def article_id(url: str) -> str:
    return short_hash(canonical_url(url))


def provider_id(domain: str) -> str:
    return short_hash(canonical_host(domain))


def month_of(ts: datetime | None) -> str:
    """Partition key: publication month in UTC."""
    return UNDATED if ts is None else f"{ts.year:04d}-{ts.month:02d}"


def _extra(entry: dict[str, Any], nested: tuple[str, ...] = ()) -> str | None:
    """Unknown keys of this entry and of its nested mappings (``nested``: provider), as canonical JSON."""
    own = entry.get("__extra__")
    inner = {key: entry[key]["__extra__"] for key in nested if entry.get(key) and entry[key].get("__extra__")}
    if not own and not inner:
        return None
    extra = {**(own or {}), **inner}
    return json.dumps(extra, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _provider_id(entry: dict[str, Any]) -> str | None:
    domain = (entry.get("provider") or {}).get("domain")
    return provider_id(domain) if domain else None


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


# --- the generated row builder -----------------------------------------------------------------


def _field_expr(path: str, entry: str) -> str:
    """Python expression for a frontmatter field of ``entry`` (checked values hold every known key)."""
    if not path:
        return entry
    head, _, rest = path.partition(".")
    expr = f"{entry}[{head!r}]"
    for key in rest.split(".") if rest else ():
        expr = f"({expr} or _EMPTY).get({key!r})"
    return expr


def _derived_expr(name: str, entry: str, indices: list[str], nested: tuple[str, ...]) -> str:
    exprs = {
        "article_id": "aid",
        "position": indices[-1] if indices else "None",
        "related_position": indices[0] if len(indices) > 1 else "None",
        "related_article_id": f"_article_id({entry}['webUrl'])",
        "provider_id": f"_provider_id({entry})",
        "body": "(body or None)",
        "extra": f"_extra({entry}, {nested!r})",
        "source_path": "source_path",
        "source_sha256": "source_sha256",
        "run_id": "run_id",
    }
    if name not in exprs:
        raise ValueError(f"unknown derivation {name!r} (schema.DERIVATIONS)")
    return exprs[name]


def _table_source(table: schema.Table) -> str:
    """``out_<table> = [...]``: a comprehension over the table's entries, one tuple per row."""
    if table.entry is None:
        raise ValueError(f"{table.name} declares no entry: it is not a document table")
    path = table.entry.path
    loops: list[str] = []
    indices: list[str] = []
    entry = "v"
    for depth, key in enumerate(path.split("[].") if path else []):
        index, item = f"i{depth}", f"e{depth}"
        loops.append(f"for {index}, {item} in enumerate({entry}[{key!r}] or ())")
        indices.append(index)
        entry = item
    values = []
    for col in table.columns:
        if col.field is not None:
            values.append(_field_expr(col.field.path, entry))
        elif col.derived is not None:
            values.append(_derived_expr(col.derived, entry, indices, tuple(k for k, _ in table.entry.objects)))
        else:
            raise ValueError(f"{table.name}.{col.name} declares neither a field nor a derivation")
    row = "(" + ", ".join(values) + ",)"
    return f"    out_{table.name} = [{row} {' '.join(loops)}]" if loops else f"    out_{table.name} = [{row}]"


def compile_rows(tables: tuple[schema.Table, ...] = schema.DOCUMENT_TABLES) -> Callable[..., tuple[list[Any], ...]]:
    """A function (v, aid, body, source_path, source_sha256, run_id) -> one list of row tuples per table."""
    lines = ["def build_rows(v, aid, body, source_path, source_sha256, run_id):"]
    lines += [_table_source(t) for t in tables]
    lines.append("    return (" + ", ".join(f"out_{t.name}" for t in tables) + ",)")
    scope: dict[str, Any] = {
        "_EMPTY": {},
        "_article_id": article_id,
        "_provider_id": _provider_id,
        "_extra": _extra,
    }
    exec(compile("\n".join(lines), f"<rows of {', '.join(t.name for t in tables)}>", "exec"), scope)  # noqa: S102
    build: Callable[..., tuple[list[Any], ...]] = scope["build_rows"]
    return build


_BUILD = compile_rows()


def normalize(doc: Checked, body: str, source: Source, run_id: str) -> Rows:
    """Rows for one document that met the contract."""
    v = doc.values
    aid = article_id(identity_url(v))
    tables = _BUILD(v, aid, body, source.path, source.sha256, run_id)
    return Rows(aid, month_of(v.get("publishedDateTime")), *tables)
