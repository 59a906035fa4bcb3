"""The seed document contract and the checks that enforce it.

The fields, their kinds, which are required and what they mean are declared once, on the
document tables' columns in ``pipeline/schema.py``; ``fields_of`` turns those declarations
into the tree this module checks. ``check_document`` turns loaded frontmatter into typed
values or a list of problems that name the field path and say what was expected. Values
are converted only when nothing is lost; anything else is refused, never guessed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

from pipeline import schema
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
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?P<fraction>\.\d+)?)?[ ]?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)
_BASIC_FORMAT = re.compile(r"\d{8}(?:[Tt]\d{4,6}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:?\d{2})?)?")
_EPOCH = re.compile(r"[-+]?\d{9,13}(?:\.\d+)?")
_LEAP_SECOND = re.compile(r"[Tt ]\d{2}:\d{2}:60")
_INT64 = 2**63
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
        try:
            parts = urlsplit(text.strip())
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError on a port out of range
        except ValueError as exc:
            self.fail(path, "bad_url", f"expected an absolute http(s) URL, got {text!r} ({exc})")
            return None
        if parts.scheme.lower() not in ("http", "https") or not host or any(c.isspace() for c in host):
            self.fail(path, "bad_url", f"expected an absolute http(s) URL, got {text!r}")
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
        """RFC 3339 / ISO 8601 extended format; kept to the microsecond (further digits are dropped)."""
        if isinstance(value, datetime):
            parsed = value
        elif isinstance(value, date):
            parsed = datetime(value.year, value.month, value.day)
        elif isinstance(value, str) and (match := _TIMESTAMP.fullmatch(value.strip())):
            text = value.strip()
            fraction = match.group("fraction")
            if fraction and len(fraction) > 7:  # '.' + more than 6 digits: microseconds are what we keep
                text = text[: match.start("fraction") + 7] + text[match.end("fraction") :]
            text = text.replace(" Z", "Z").replace(" z", "Z")
            if text.endswith("z"):
                text = text[:-1] + "Z"
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError as exc:
                self.fail(path, "bad_timestamp", _impossible(value, exc))
                return None
        else:
            self.fail(path, "bad_timestamp", _not_a_timestamp(value))
            return None
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            self.fail(path, "bad_timestamp", f"{value!r} falls outside years 1-9999 in UTC")
            return None

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
                    self.missing(f, sub)
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

    def missing(self, f: Field, path: str) -> None:
        self.fail(path, "missing_field", f"required field is missing; expected {f.description}")

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


def _impossible(value: str, exc: ValueError) -> str:
    """Why a well-formed timestamp is not a real moment."""
    if _LEAP_SECOND.search(value):
        return f"{value!r} is a leap second (:60), which timestamps cannot hold; write :59 or the next minute"
    return f"{value!r} is not a real date/time ({exc})"


def _not_a_timestamp(value: Any) -> str:
    """What a value that is not an ISO 8601 timestamp looks like instead."""
    expected = "expected an RFC 3339 / ISO 8601 date-time such as 2023-10-08T16:23:00Z"
    if not isinstance(value, str):
        return f"{expected}, got {_kind_of(value)} ({value!r})"
    text = value.strip()
    if _EPOCH.fullmatch(text):
        return f"{expected}, got the number {text!r} (seconds since 1970? write the date and time out)"
    if _BASIC_FORMAT.fullmatch(text):
        return f"{expected}, got {text!r} in ISO 8601 basic format (no '-' and ':'); use the extended format"
    return f"{expected}, got {value!r}"


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
            checker.fail("webUrl", "missing_field", "an identity URL is required: give webUrl (or originalUrl)")
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
# ASCII host, no port, user or brackets, no white space: urlsplit cannot fail or find another host.
_FAST_URL = re.compile(r"(?:[Hh][Tt][Tt][Pp][Ss]?)://[A-Za-z0-9.-]+(?:[/?#]\S*)?").fullmatch
# Seconds, up to 6 fraction digits, a zone: fromisoformat reads it as _Checker.timestamp would.
_FAST_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})").fullmatch


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
                lines.append(f"        ck.missing({self.ref(f)}, {sub})")
            lines += ["        v = None", "    else:"]
            lines += [f"        {line}" for line in self.value(f, "raw", sub)]
            lines.append(f"    out[{f.key!r}] = v")
        self.lines += [*lines, "    out['__extra__'] = extra", "    return out", ""]


_COMPILED: dict[int, tuple[tuple[Field, ...], Any]] = {}  # by id: hashing the tree costs more than checking


def compile_checker(document: tuple[Field, ...]) -> Any:
    """``(checker, meta) -> values | None``, generated from the field tree (cached per tree)."""
    done = _COMPILED.get(id(document))
    if done is not None and done[0] is document:
        return done[1]
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

    _COMPILED[id(document)] = (document, check)
    return check
