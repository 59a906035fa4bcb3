"""The seed document contract and the checks that enforce it.

The fields, their kinds, which are required and what they mean are declared once, on the
document tables' columns in ``pipeline/schema.py``; ``fields_of`` turns those declarations
into the tree this module checks. ``check_document`` turns loaded frontmatter into typed
values or a list of problems that name the field path and say what was expected. Values
are converted only when nothing is lost; anything else is refused, never guessed.
"""

from __future__ import annotations

import ipaddress
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

from pipeline import schema
from pipeline.read import timestamps
from pipeline.read.problems import Problem


@dataclass(frozen=True)
class Field:
    key: str
    kind: str  # text | url | int | bool | timestamp | text_list | object | object_list
    required: bool
    description: str
    fields: tuple[Field, ...] = ()


def fields_of(tables: tuple[schema.Table, ...] = schema.DOCUMENT_TABLES, path: str = "") -> tuple[Field, ...]:
    """The contract's field tree for the entry at ``path``, from the tables' column declarations.

    Fields come in column order; a nested mapping (``provider``) where its first field is; the
    lists whose entries feed child tables (``topics``, ``images``, ``related``) after them.
    """
    found = [t for t in tables if t.entry is not None and t.entry.path == path]
    if len(found) != 1 or found[0].entry is None:
        raise ValueError(f"the declaration needs exactly one table whose rows are the entries at {path!r}")
    table, objects = found[0], dict(found[0].entry.objects)
    out: list[Field] = []
    nested: dict[str, list[Field]] = {}
    for col in table.columns:
        f = col.field
        if f is None or not f.path:
            continue
        head, _, rest = f.path.partition(".")
        if not rest:
            out.append(Field(head, f.kind, f.required, f.about))
        elif head not in nested:
            nested[head] = [Field(rest, f.kind, f.required, f.about)]
            out.append(Field(head, "object", False, objects[head]))  # filled in below
        else:
            nested[head].append(Field(rest, f.kind, f.required, f.about))
    out = [Field(f.key, f.kind, f.required, f.description, tuple(nested[f.key])) if f.key in nested else f for f in out]
    prefix = f"{path}[]." if path else ""
    for child in tables:
        entry = child.entry
        if entry is None or not entry.path.startswith(prefix) or entry.path == path:
            continue
        key = entry.path[len(prefix) :]
        if "." in key or "[" in key:
            continue  # a grandchild: declared under its own parent
        sub = fields_of(tables, entry.path) if entry.kind == "object_list" else ()
        out.append(Field(key, entry.kind, False, entry.about, sub))
    return tuple(out)


DOCUMENT: tuple[Field, ...] = fields_of()

_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_INT_AS_FLOAT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\.0*")
_INT64 = 2**63
_INT64_DIGITS = len(str(_INT64))  # 19: more digits (no leading zeros) is always out of range
# White space and controls (C0, DEL, C1) inside a URL: urlsplit silently drops TAB, CR and LF.
_URL_ODD = re.compile(r"[\s\x00-\x1f\x7f-\x9f]").search
_BRACKETED_HOST = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::[0-9]*)?").fullmatch
_CHAR_NAMES = {"\t": "TAB", "\n": "LINE FEED", "\r": "CARRIAGE RETURN"}
_SPACE = re.compile(r"\s").search  # the same characters as str.isspace
_KIND_NAMES = {dict: "a mapping", list: "a list", str: "text", bool: "a boolean"}


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (date, datetime)):
        return "a date"
    return _KIND_NAMES.get(type(value), type(value).__name__)


class _Checker:
    """Walks one document against the contract, collecting problems."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.unknown: set[str] = set()

    def fail(self, path: str, reason: str, message: str) -> None:
        self.problems.append(Problem(reason, f"{path}: {message}", field=path))

    # --- scalars -----------------------------------------------------------
    def text(self, value: Any, path: str) -> str | None:
        if isinstance(value, str):
            return value
        if isinstance(value, (bool, int, float, date)):
            # Only reachable with a loader that types scalars; ours never does.
            self.fail(path, "unquoted_scalar", f"YAML read this as {_kind_of(value)} ({value!r}); quote the text")
        else:
            self.fail(path, "wrong_type", f"expected text, got {_kind_of(value)}")
        return None

    def url(self, value: Any, path: str) -> str | None:
        text = self.text(value, path)
        if text is None:
            return None
        why = _url_problem(text)
        if why is not None:
            self.fail(path, "bad_url", f"expected an absolute http(s) URL, got {_shown(text)}{why}")
            return None
        return text

    def integer(self, value: Any, path: str) -> int | None:
        result: int | None = None
        if isinstance(value, bool):
            result = None
        elif isinstance(value, int):
            result = value
        elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
            result = int(value)
        elif isinstance(value, str):
            text = value.strip()
            if _INT.fullmatch(text) or _INT_AS_FLOAT.fullmatch(text):
                digits = text.split(".")[0].lstrip("+-")
                if len(digits) > _INT64_DIGITS:  # out of range; and int() refuses more than 4,300 digits
                    self.fail(
                        path, "bad_integer", f"expected a whole number in the 64-bit range, got {len(digits):,} digits"
                    )
                    return None
                result = int(text.split(".")[0])
            elif re.fullmatch(r"[-+]?0[0-9]+", text):
                self.fail(
                    path,
                    "ambiguous_integer",
                    f"{text!r} has a leading zero (YAML 1.1 reads it as octal); write it without the zero",
                )
                return None
        if result is None or not -_INT64 <= result < _INT64:
            self.fail(path, "bad_integer", f"expected a whole number, got {value!r}")
            return None
        return result

    def boolean(self, value: Any, path: str) -> bool | None:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        self.fail(path, "bad_boolean", f"expected true or false, got {value!r}")
        return None

    def timestamp(self, value: Any, path: str) -> datetime | None:
        """One of the forms in ``timestamps.FORMS``, read to UTC; kept to the microsecond (further digits are cut)."""
        if isinstance(value, datetime):
            result = timestamps.to_utc(repr(value), value if value.tzinfo else value.replace(tzinfo=UTC))
        elif isinstance(value, date):
            result = datetime(value.year, value.month, value.day, tzinfo=UTC)
        elif isinstance(value, str):
            result = timestamps.parse(value)
        else:
            result = f"{timestamps.EXPECTED}, got {_kind_of(value)} ({_shown(value)})"
        if isinstance(result, str):
            self.fail(path, "bad_timestamp", result)
            return None
        return result

    # --- structure ---------------------------------------------------------
    def mapping(self, value: Any, fields: tuple[Field, ...], path: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.fail(path or "frontmatter", "wrong_type", f"expected a mapping, got {_kind_of(value)}")
            return None
        out: dict[str, Any] = {}
        extra = self.extras(value, frozenset(f.key for f in fields), path)
        for f in fields:
            sub = f"{path}.{f.key}" if path else f.key
            raw = value.get(f.key)
            if raw is None:
                if f.required:
                    self.missing(f, sub, value)
                out[f.key] = None
                continue
            out[f.key] = self.value(raw, f, sub)
        out["__extra__"] = extra
        return out

    def extras(self, value: dict[str, Any], known: frozenset[str], path: str) -> dict[str, Any] | None:
        """Keys of a mapping outside the contract (kept in extra columns, counted as drift)."""
        if known.issuperset(value):
            return None
        extra = {k: v for k, v in value.items() if k not in known}
        for key in extra:
            self.unknown.add(_generic(path, key))
        return extra

    def missing(self, f: Field, path: str, value: dict[str, Any]) -> None:
        near = near_miss_key(f.key, value)
        found = f"; found {near}" if near else ""
        self.fail(path, "missing_field", f"required field is missing{found}; expected {f.description}")

    def value(self, raw: Any, f: Field, path: str) -> Any:
        kind = f.kind
        if kind == "text":
            return self.text(raw, path)
        if kind == "url":
            return self.url(raw, path)
        if kind == "int":
            return self.integer(raw, path)
        if kind == "bool":
            return self.boolean(raw, path)
        if kind == "timestamp":
            return self.timestamp(raw, path)
        if kind == "object":
            return self.mapping(raw, f.fields, path)
        if not isinstance(raw, list):
            self.fail(path, "wrong_type", f"expected a list, got {_kind_of(raw)}")
            return None
        if kind == "text_list":
            items = []
            for i, item in enumerate(raw):
                if item is None:
                    self.fail(f"{path}[{i}]", "wrong_type", "expected text, got an empty entry")
                items.append(self.text(item, f"{path}[{i}]") if item is not None else None)
            return items
        return [self.mapping(item, f.fields, f"{path}[{i}]") for i, item in enumerate(raw)]


def _shown(value: Any, limit: int = 200) -> str:
    """``repr`` of a value for a message, cut to ``limit`` characters (a 5 MB value stays out of the rejects table)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def char_name(c: str) -> str:
    """``U+200B ZERO WIDTH SPACE``: a character that cannot be seen, named by code point and name."""
    name = _CHAR_NAMES.get(c) or unicodedata.name(c, "control character")
    return f"U+{ord(c):04X} {name}"


def _url_problem(text: str) -> str | None:
    """None when ``text`` is an absolute http(s) URL; else why not (" (detail)" or "").

    Surrounding white space is trimmed (as the identity is); any inside, and any control
    character, is refused rather than dropped. A host in brackets must be an IPv6 address.
    """
    trimmed = text.strip()
    odd = _URL_ODD(trimmed)
    if odd:
        at = len(text) - len(text.lstrip()) + odd.start() + 1
        return f" ({char_name(odd.group())} at character {at}; a URL holds no white space or controls: write a space as %20)"
    try:
        parts = urlsplit(trimmed)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError as exc:
        return f" ({exc})"
    if parts.scheme.lower() not in ("http", "https") or not host:
        return ""
    hostport = parts.netloc.rpartition("@")[2]
    if "[" in hostport or "]" in hostport:
        literal = _BRACKETED_HOST(hostport)
        try:
            ipaddress.IPv6Address(literal.group(1) if literal else "")
        except ValueError:
            return " (a host in brackets must be an IPv6 address such as [2001:db8::1], without a zone)"
    return None


def _invisible(c: str) -> bool:
    """White space or a format character (U+200B, U+FEFF, U+200E ...): nothing a reader sees in a key."""
    return c.isspace() or unicodedata.category(c) == "Cf"


def near_miss_key(key: str, value: dict[str, Any]) -> str | None:
    """A key of ``value`` that is ``key`` but for case, surrounding space or invisible characters, and how it differs.

    ``"'Title' (differs in case)"``, ``"'\\u200btitle' (U+200B ZERO WIDTH SPACE before it)"``: said
    where the required field is reported missing, so the fix is obvious. Such a key is still an
    unknown key (kept in extra), never taken for the field: that would be a guess.
    """
    want = key.casefold()
    for k in value:
        if not isinstance(k, str) or k == key or len(k) > 4 * len(key) + 16:
            continue
        seen = [i for i, c in enumerate(k) if not _invisible(c)]
        if not seen or "".join(k[i] for i in seen).casefold() != want:
            continue
        first, last = seen[0], seen[-1]
        notes: list[str] = []
        for i, c in enumerate(k):
            if _invisible(c):
                where = "before it" if i < first else "after it" if i > last else "inside it"
                note = f"{char_name(c)} {where}"
                if note not in notes:
                    notes.append(note)
        if "".join(k[i] for i in seen) != key:
            notes.append("differs in case")
        return f"{k!r} ({', '.join(notes)})"
    return None


def _generic(path: str, key: str) -> str:
    """``related[2].images[0]`` + ``alt`` -> ``related[].images[].alt`` (for drift counts)."""
    base = re.sub(r"\[\d+\]", "[]", path)
    return f"{base}.{key}" if base else key


@dataclass(frozen=True)
class Checked:
    """A document that meets the contract: typed values and unknown key paths."""

    values: dict[str, Any]
    unknown_keys: frozenset[str]


def check_document(meta: Any, document: tuple[Field, ...] = DOCUMENT, compiled: bool = True) -> Checked | list[Problem]:
    """Check loaded frontmatter against the contract; typed values or problems.

    ``compiled`` uses the checker generated from the declaration (same values, same problems
    in the same order; ``tests/test_contract_compiled.py`` compares the two).
    """
    checker = _Checker()
    values = compile_checker(document)(checker, meta) if compiled else checker.mapping(meta, document, "")
    if values is not None:
        title = values.get("title")
        if isinstance(title, str) and not title.strip():
            checker.fail("title", "empty_field", "title is empty; expected a headline")
        if meta.get("webUrl") is None and meta.get("originalUrl") is None:
            near = near_miss_key("webUrl", meta) or near_miss_key("originalUrl", meta)
            found = f"; found {near}" if near else ""
            checker.fail("webUrl", "missing_field", f"an identity URL is required: give webUrl (or originalUrl){found}")
        _check_domains(checker, values)
        for i, img in enumerate(_images(values)):
            _check_dims(checker, img, f"images[{i}]")
        for r, rel in enumerate(values.get("related") or []):
            for i, img in enumerate((rel or {}).get("images") or []):
                _check_dims(checker, img, f"related[{r}].images[{i}]")
    if checker.problems or values is None:
        return checker.problems
    return Checked(values, frozenset(checker.unknown))


def _images(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [img for img in values.get("images") or [] if img]


def _check_dims(checker: _Checker, img: dict[str, Any] | None, path: str) -> None:
    for key in ("width", "height"):
        if img and isinstance(img.get(key), int) and img[key] < 0:
            checker.fail(f"{path}.{key}", "bad_integer", f"expected a size >= 0, got {img[key]}")


def _check_domains(checker: _Checker, values: dict[str, Any]) -> None:
    def check(provider: dict[str, Any] | None, path: str) -> None:
        domain = (provider or {}).get("domain")
        if isinstance(domain, str) and (not domain.strip() or _SPACE(domain.strip())):
            checker.fail(f"{path}.domain", "bad_domain", f"expected a domain such as wsj.com, got {domain!r}")

    check(values.get("provider"), "provider")
    for r, rel in enumerate(values.get("related") or []):
        check((rel or {}).get("provider"), f"related[{r}].provider")


def describe_contract(document: tuple[Field, ...] = DOCUMENT) -> list[tuple[str, str, bool, str]]:
    """Flattened contract for docs: (field path, kind, required, description)."""
    rows: list[tuple[str, str, bool, str]] = []

    def walk(fields: tuple[Field, ...], prefix: str) -> None:
        for f in fields:
            path = f"{prefix}{f.key}"
            rows.append((path, f.kind, f.required, f.description))
            if f.fields:
                walk(f.fields, f"{path}[]." if f.kind == "object_list" else f"{path}.")

    walk(document, "")
    return rows


# --- the compiled checker -------------------------------------------------------------------
# ``_Checker`` interprets the field tree: for every field of every document it builds the field's
# path, dispatches on its kind and calls a method. ``compile_checker`` writes that walk out as Python
# source, once per field tree: the common, valid value of each kind is accepted inline by a test that
# implies the interpreted check passes with the same result, and anything else calls the very same
# ``_Checker`` method with the same path, so values, problems and their order are identical.

# Each fast test below implies the interpreted check accepts the value and returns what it returns.
_FAST_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})").fullmatch  # < 2**63: always in range
# ASCII host, no port, user or brackets, no white space or controls: urlsplit cannot fail or find another host.
_FAST_URL = re.compile(r"(?:[Hh][Tt][Tt][Pp][Ss]?)://[A-Za-z0-9.-]+(?:[/?#][^\s\x00-\x1f\x7f-\x9f]*)?").fullmatch
# Seconds, up to 6 fraction digits, a zone: fromisoformat reads it as _Checker.timestamp would.
_FAST_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)"
).fullmatch  # offset minutes 00-59: fromisoformat reads +05:60 as +06:00


def _fast_timestamp(ck: _Checker, raw: Any, path: str) -> datetime | None:
    if type(raw) is str and _FAST_TIMESTAMP(raw):
        try:
            return datetime.fromisoformat(raw).astimezone(UTC)
        except (ValueError, OverflowError):
            pass  # the interpreted check writes the message
    return ck.timestamp(raw, path)


class _Source:
    """Python source of one compiled checker, and the objects it refers to by index."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[tuple[Field, ...], str] = {}  # function name per mapping shape
        self.refs: list[Any] = []  # fields, key sets and shapes the source names as R[i]

    def ref(self, obj: Any) -> str:
        self.refs.append(obj)
        return f"R[{len(self.refs) - 1}]"

    def value(self, f: Field, raw: str, path: str) -> list[str]:
        """Lines that set ``v`` from ``raw`` for field ``f`` (path is a source expression)."""
        kind = f.kind
        if kind == "text":
            return [f"v = {raw} if type({raw}) is str else ck.text({raw}, {path})"]
        if kind == "url":
            return [f"v = {raw} if type({raw}) is str and _FAST_URL({raw}) else ck.url({raw}, {path})"]
        if kind == "int":
            return [f"v = int({raw}) if type({raw}) is str and _FAST_INT({raw}) else ck.integer({raw}, {path})"]
        if kind == "bool":
            return [f"v = True if {raw} == 'true' else False if {raw} == 'false' else ck.boolean({raw}, {path})"]
        if kind == "timestamp":
            return [f"v = _fast_timestamp(ck, {raw}, {path})"]
        if kind == "object":
            return [f"v = {self.names[f.fields]}(ck, {raw}, {path})"]
        if kind == "text_list":
            fast = [f"if type({raw}) is list and all(type(x) is str for x in {raw}):", f"    v = list({raw})"]
        elif kind == "object_list":
            item = f"{self.names[f.fields]}(ck, x, f'{{p}}[{{i}}]')"
            fast = [f"if type({raw}) is list:", f"    p = {path}", f"    v = [{item} for i, x in enumerate({raw})]"]
        else:
            raise ValueError(f"no compiled check for kind {kind!r}")
        return [*fast, "else:", f"    v = ck.value({raw}, {self.ref(f)}, {path})"]

    def mapping(self, fields: tuple[Field, ...]) -> None:
        """One function per mapping shape, mirroring ``_Checker.mapping`` field by field."""
        for f in fields:  # nested shapes first, so their names exist when referenced
            if f.kind in ("object", "object_list") and f.fields not in self.names:
                self.mapping(f.fields)
        if fields in self.names:
            return
        name = self.names[fields] = f"_check_{len(self.names)}"
        known = self.ref(frozenset(f.key for f in fields))
        lines = [
            f"def {name}(ck, value, path):",
            "    if type(value) is not dict:",
            f"        return ck.mapping(value, {self.ref(fields)}, path)",
            f"    extra = ck.extras(value, {known}, path)",
            "    out = {}",
            "    get = value.get",
        ]
        for f in fields:
            sub = f"(f'{{path}}.{f.key}' if path else {f.key!r})"
            lines += [f"    raw = get({f.key!r})", "    if raw is None:"]
            if f.required:
                lines.append(f"        ck.missing({self.ref(f)}, {sub}, value)")
            lines += ["        v = None", "    else:"]
            lines += [f"        {line}" for line in self.value(f, "raw", sub)]
            lines.append(f"    out[{f.key!r}] = v")
        self.lines += [*lines, "    out['__extra__'] = extra", "    return out", ""]


class _CheckerCache:
    """Compiled checkers by field tree, found by the tree's identity: hashing a tree costs more than
    checking a document, and a tuple cannot be weakly referenced. Each entry holds its tree, so a
    cached tree stays alive and no other object can take its id while the entry exists (entries are
    few and never dropped: ``DOCUMENT`` and the trees tests build)."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[tuple[Field, ...], Any]] = {}

    def get(self, document: tuple[Field, ...]) -> Any:
        entry = self._entries.get(id(document))
        return entry[1] if entry is not None and entry[0] is document else None

    def put(self, document: tuple[Field, ...], check: Any) -> None:
        self._entries[id(document)] = (document, check)

    def __len__(self) -> int:
        return len(self._entries)


_COMPILED = _CheckerCache()


def compile_checker(document: tuple[Field, ...]) -> Any:
    """``(checker, meta) -> values | None``, generated from the field tree (cached per tree, ``_COMPILED``)."""
    done = _COMPILED.get(document)
    if done is not None:
        return done
    source = _Source()
    source.mapping(document)
    namespace: dict[str, Any] = {
        "R": source.refs,
        "_FAST_INT": _FAST_INT,
        "_FAST_URL": _FAST_URL,
        "_fast_timestamp": _fast_timestamp,
    }
    code = compile("\n".join(source.lines), f"<contract checker {len(_COMPILED)}>", "exec")
    exec(code, namespace)  # noqa: S102
    top = namespace[source.names[document]]

    def check(ck: _Checker, meta: Any) -> Any:
        return top(ck, meta, "")

    _COMPILED.put(document, check)
    return check
