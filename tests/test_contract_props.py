"""Property tests of the document contract and of the run's file accounting.

(a) Documents made by Hypothesis, serialized with ``yaml.safe_dump`` (which quotes whatever YAML 1.1 would
    retype), must come out of ``pipeline.extract.extract`` exactly as they went in.
(b) Random folders of valid, broken, duplicate and ignored files: every discovered file is accounted for
    exactly once, over a first and an incremental second run.

Raw C1 controls and U+2028/U+2029 in the frontmatter are refused as ``control_character`` (YAML would
fold some of them into spaces); the round-trip test accepts exactly that refusal. Timestamps at the very
edges of years 1..9999 and URLs that ``urllib`` cannot split are covered by example tests in
test_quarantine.py.
"""

from __future__ import annotations

import json
import os
import re
import string
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import schema
from pipeline.config import Settings
from pipeline.engine.stages import make_run_id, run_all, utc_now
from pipeline.engine.validate import validate_folder
from pipeline.read.contract import DOCUMENT
from pipeline.read.extract import Loaded, extract
from pipeline.read.normalize import Source, article_id
from pipeline.read.problems import Problem
from tests.conftest import SEEDS, catalog_rows

TEMPLATE_TEXT = (SEEDS / "000_0d86a7039b408f6d.txt").read_text(encoding="utf-8")
TEMPLATE_URL = "https://www.psychologytoday.com/us/blog/the-digital-self/202310/artificial-empathy-a-human-construct-borrowed-by-ai"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
KNOWN_KEYS = frozenset(f.key for f in DOCUMENT)

# --- (a) round trip of generated documents -------------------------------------------------------

# Strings YAML 1.1 (or a careless loader) would turn into something else, plus quoting hazards.
SPECIAL_TEXT = [
    "no", "No", "NO", "yes", "Yes", "on", "off", "On", "y", "n", "Y", "N", "true", "False", "TRUE", "null",
    "Null", "NULL", "nULL", "~", "", " ", "0777", "0o17", "0x1F", "0b101", "1:20", "190:20:30", "1_000", "1e3",
    "6.8523015e+5", ".inf", "-.Inf", ".NaN", "+1", "-0", "0", "007", "1.5", "80.0", "2023-10-08",
    "2023-10-08T16:23:00Z", "2001-12-14 21:59:43.10 -5", "12:30:45", "=", "<<", "-", "- x", "? x", ": x",
    "x: y", "# not a comment", "x # y", "&anchor", "*alias", "!tag", "!!binary aGk=", "%YAML 1.2", "@at",
    "`tick", "[a, b]", "{a: 1}", "'", '"', "''", '""', "it's", 'say "hi"', "---", "...", "--- x", "a\n---\nb",
    "line one\nline two", "trailing ", " leading", "tab\there", "back\\slash", "ü", "日本語", "emoji 🎉",
    "\u00a0nbsp", "zero\u200bwidth", "rtl \u202e", "\u2028", "x'); DROP TABLE articles; --", "../../etc/passwd",
    "C:\\Windows", "\x00nul", "\x1bescape", "\ufeffbom",
]  # fmt: skip
TEXT_CHARS = st.characters(exclude_categories=("Cs",))
RAW_BREAKS = re.compile("[\x80-\x9f\u2028\u2029]")
texts = st.one_of(st.sampled_from(SPECIAL_TEXT), st.text(TEXT_CHARS, max_size=30))
int64s = st.one_of(st.integers(INT64_MIN, INT64_MAX), st.integers(-1000, 1000))
sizes = st.one_of(st.integers(0, INT64_MAX), st.integers(0, 5000))
domains = st.from_regex(r"[a-z0-9][a-z0-9-]{0,10}\.[a-z]{2,6}", fullmatch=True)
URL_PATH_CHARS = string.ascii_letters + string.digits + "-._~%/?=&+,;@!$'()*"
urls = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}/{path}",
    st.sampled_from(["http", "https", "HTTPS"]),
    domains,
    st.text(URL_PATH_CHARS, max_size=30),
)
offsets = st.one_of(
    st.none(),
    st.just(UTC),
    st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m))),
)
# Years 1000..9000 keep every offset inside datetime's range; the edges are example-tested elsewhere.
instants = st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9000, 12, 31), timezones=offsets)


def as_utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


@st.composite
def timestamps(draw: st.DrawFn) -> tuple[Any, datetime]:
    """(value to write, the UTC instant it must load as)."""
    dt = draw(instants)
    form = draw(st.sampled_from(["object", "iso_t", "zulu", "date"]))
    if form == "object":  # safe_dump writes '2023-10-08 16:23:00+05:30' unquoted
        return dt, as_utc(dt)
    if form == "iso_t":  # a quoted string
        return dt.isoformat(), as_utc(dt)
    if form == "zulu":
        utc = as_utc(dt)
        return utc.replace(tzinfo=None).isoformat() + "Z", utc
    day = dt.date()
    return (day if draw(st.booleans()) else day.isoformat()), datetime(day.year, day.month, day.day, tzinfo=UTC)


@st.composite
def integers_written(draw: st.DrawFn, values: st.SearchStrategy[int]) -> tuple[Any, int]:
    """(value to write, the int it must load as): plain, quoted, or quoted with a '.0' tail."""
    n = draw(values)
    form = draw(st.sampled_from(["int", "str", "float_str"]))
    return {"int": n, "str": str(n), "float_str": f"{n}.0"}[form], n


@st.composite
def images(draw: st.DrawFn) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """(image mapping, expected (url, width, height, is_cached))."""
    img: dict[str, Any] = {}
    url = draw(st.one_of(st.none(), urls))  # image URLs are absolute http(s) URLs like the others
    width = draw(st.one_of(st.none(), integers_written(sizes)))
    height = draw(st.one_of(st.none(), integers_written(sizes)))
    cached = draw(st.one_of(st.none(), st.booleans()))
    if url is not None:
        img["url"] = url
    if width is not None:
        img["width"] = width[0]
    if height is not None:
        img["height"] = height[0]
    if cached is not None:
        img["isCached"] = cached
    return img, (url, None if width is None else width[1], None if height is None else height[1], cached)


@st.composite
def providers(draw: st.DrawFn) -> dict[str, Any]:
    p = {"domain": draw(domains)}
    if draw(st.booleans()):
        p["name"] = draw(texts)
    return p


@st.composite
def related_entries(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    url = draw(urls)
    entry: dict[str, Any] = {"webUrl": url}
    exp: dict[str, Any] = {"web_url": url, "title": None, "quality": None, "published_at": None, "images": []}
    if draw(st.booleans()):
        entry["title"] = exp["title"] = draw(texts)
    if draw(st.booleans()):
        entry["quality"], exp["quality"] = draw(integers_written(int64s))
    if draw(st.booleans()):
        entry["publishedDateTime"], exp["published_at"] = draw(timestamps())
    if draw(st.booleans()):
        entry["provider"] = draw(providers())
    imgs = draw(st.lists(images(), max_size=2))
    if imgs or draw(st.booleans()):
        entry["images"] = [i for i, _ in imgs]
        exp["images"] = [e for _, e in imgs]
    return entry, exp


@st.composite
def documents(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """(frontmatter mapping, what extract must produce)."""
    doc: dict[str, Any] = {"title": draw(texts)}
    exp: dict[str, Any] = {"title": doc["title"]}
    which = draw(st.sampled_from(["web", "original", "both"]))
    web, original = draw(urls), draw(urls)
    exp["web_url"] = web if which != "original" else None
    exp["original_url"] = original if which != "web" else None
    if exp["web_url"]:
        doc["webUrl"] = web
    if exp["original_url"]:
        doc["originalUrl"] = original
    exp["identity"] = exp["web_url"] or exp["original_url"]
    for key, column in (("excerpt", "excerpt"), ("category", "category"), ("type", "type"), ("secured", "secured")):
        exp[column] = None
        if draw(st.booleans()):
            doc[key] = exp[column] = draw(texts)
    for key, column in (("quality", "quality"), ("heat", "heat")):
        exp[column] = None
        if draw(st.booleans()):
            doc[key], exp[column] = draw(integers_written(int64s))
    exp["is_published"] = None
    if draw(st.booleans()):
        doc["published"] = exp["is_published"] = draw(st.booleans())
    exp["published_at"] = None
    if draw(st.booleans()):
        doc["publishedDateTime"], exp["published_at"] = draw(timestamps())
    exp["provider_domain"] = exp["provider_name"] = None
    if draw(st.booleans()):
        doc["provider"] = draw(providers())
        exp["provider_domain"] = doc["provider"]["domain"]
        exp["provider_name"] = doc["provider"].get("name")
    exp["topics"] = []
    if draw(st.booleans()):
        doc["topics"] = exp["topics"] = draw(st.lists(texts, max_size=6))
    exp["images"] = []
    if draw(st.booleans()):
        imgs = draw(st.lists(images(), max_size=3))
        doc["images"] = [i for i, _ in imgs]
        exp["images"] = [e for _, e in imgs]
    exp["related"] = []
    if draw(st.booleans()):
        rels = draw(st.lists(related_entries(), max_size=3))
        doc["related"] = [r for r, _ in rels]
        exp["related"] = [e for _, e in rels]
    extras = draw(st.dictionaries(texts.filter(lambda k: k not in KNOWN_KEYS), texts, max_size=3))
    doc.update(extras)
    exp["extras"] = extras
    return doc, exp


BODIES = st.builds(
    lambda lead, middle, trail: "\n" * lead + "Start." + middle + "End." + "\n" * trail,
    st.integers(0, 3),
    st.text(st.characters(exclude_categories=("Cs", "Cc"), include_characters="\t\n\r"), max_size=60),
    st.integers(0, 3),
)


def compose(doc: dict[str, Any], body: str, *, sort_keys: bool, allow_unicode: bool, width: int) -> str:
    fm = yaml.safe_dump(doc, sort_keys=sort_keys, allow_unicode=allow_unicode, width=width)
    return "---\n" + fm + "---\n" + body


def column(rows: list[tuple[Any, ...]], table: str, name: str) -> list[Any]:
    i = schema.table(table).column_names.index(name)
    return [r[i] for r in rows]


def _assert_document(result: Loaded, exp: dict[str, Any], body: str) -> None:
    rows = result.rows
    (article,) = rows.articles
    cols = dict(zip(schema.table("articles").column_names, article, strict=True))
    aid = article_id(exp["identity"])
    assert cols["article_id"] == aid == rows.article_id
    for key in (
        "title", "web_url", "original_url", "excerpt", "category", "type", "secured",
        "quality", "heat", "is_published", "provider_domain", "provider_name",
    ):  # fmt: skip
        assert cols[key] == exp[key], key
        assert type(cols[key]) is type(exp[key]), key
    assert cols["published_at"] == exp["published_at"]
    if exp["published_at"] is not None:
        assert cols["published_at"].utcoffset() == timedelta(0)
        assert rows.month == f"{exp['published_at'].year:04d}-{exp['published_at'].month:02d}"
    else:
        assert rows.month == "undated"
    assert cols["body"] == body.strip()
    extras = exp["extras"]
    expected_extra = json.dumps(extras, ensure_ascii=False, sort_keys=True, separators=(",", ":")) if extras else None
    assert cols["extra"] == expected_extra
    assert result.unknown_keys == frozenset(extras)
    assert rows.article_topics == [(aid, i, t) for i, t in enumerate(exp["topics"])]
    assert [tuple(r[2:6]) for r in rows.article_images] == exp["images"]
    assert [r[:2] for r in rows.article_images] == [(aid, i) for i in range(len(exp["images"]))]
    assert len(rows.related_articles) == len(exp["related"])
    rel_cols = schema.table("related_articles").column_names
    for pos, (row, rexp) in enumerate(zip(rows.related_articles, exp["related"], strict=True)):
        r = dict(zip(rel_cols, row, strict=True))
        assert (r["article_id"], r["position"]) == (aid, pos)
        assert r["related_article_id"] == article_id(rexp["web_url"])
        for key in ("web_url", "title", "quality", "published_at"):
            assert r[key] == rexp[key], key
        got_imgs = [tuple(x[3:7]) for x in rows.related_article_images if x[1] == pos]
        assert got_imgs == rexp["images"]


@settings(max_examples=300, deadline=None)
@given(
    documents(),
    BODIES,
    st.booleans(),
    st.booleans(),
    st.sampled_from([20, 80, 4096]),
    st.sampled_from(["lf", "crlf_frontmatter", "bom"]),
)
def test_safe_dumped_documents_round_trip_exactly(
    doc_exp: tuple[dict[str, Any], dict[str, Any]],
    body: str,
    sort_keys: bool,
    allow_unicode: bool,
    width: int,
    framing: str,
) -> None:
    doc, exp = doc_exp
    text = compose(doc, body, sort_keys=sort_keys, allow_unicode=allow_unicode, width=width)
    if framing == "crlf_frontmatter":
        fm_end = text.index("\n---\n") + len("\n---\n")
        text = text[:fm_end].replace("\n", "\r\n") + text[fm_end:]
    data = text.encode("utf-8")
    if framing == "bom":
        data = b"\xef\xbb\xbf" + data
    result = extract(data, Source("doc.md", "0" * 64), "prop-run")
    if RAW_BREAKS.search(text.split("\n---", 1)[0] if text.startswith("---") else text):
        # YAML would fold these line breaks into spaces: refused, never silently changed.
        assert isinstance(result, Problem) and result.reason == "control_character", result
        return
    if not exp["title"].strip():
        assert isinstance(result, Problem), "a blank title must be refused"
        assert (result.stage, result.reason, result.field) == ("contract", "empty_field", "title")
        return
    assert isinstance(result, Loaded), f"{result}\n---- input ----\n{text}"
    _assert_document(result, exp, body)


# Plain (unquoted) scalars that YAML 1.1 would retype: the strict loader keeps the text as written.
PLAIN_LOOKALIKES = [
    "no", "No", "NO", "yes", "on", "off", "y", "n", "true", "False", "0777", "0o17", "0x1F", "1:20",
    "190:20:30", "1_000", "1e3", ".inf", "-.inf", ".NaN", "+1", "-0", "007", "1.5", "2023-10-08",
    "2023-10-08T16:23:00Z", "12:30:45", "=", "<<", "nULL", "~x", "1.0e+3", "0.", "-.5",
]  # fmt: skip
NULLS = ["null", "Null", "NULL", "~"]
# First character: not a YAML indicator ('-', '>', '@', ...); no ': ', ' #', quotes or brackets anywhere.
plain_words = st.from_regex(r"[A-Za-z0-9_.+=<][A-Za-z0-9_.+=<>@ -]{0,20}[A-Za-z0-9_.+=<>@-]", fullmatch=True)


def _seed_with(**lines: str) -> str:
    text = TEMPLATE_TEXT.replace(TEMPLATE_URL, "https://props.example/plain")
    for key, value in lines.items():
        old = {"title": 'title: "Artificial Empathy: A Human Construct Borrowed by AI"', "quality": "\nquality: 59"}[
            key
        ]
        new = f"title: {value}" if key == "title" else f"\nquality: {value}"
        assert text.count(old) == 1
        text = text.replace(old, new)
    return text


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.sampled_from(PLAIN_LOOKALIKES + NULLS), plain_words))
def test_plain_scalars_stay_exact_text(word: str) -> None:
    result = extract(_seed_with(title=word).encode("utf-8"), Source("p.md", "0" * 64), "r")
    if word in NULLS:
        assert isinstance(result, Problem) and (result.reason, result.field) == ("missing_field", "title")
    else:
        assert isinstance(result, Loaded), result
        assert column(result.rows.articles, "articles", "title") == [word]


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**70), 2**70), st.sampled_from(["plain", "quoted", "dot0", "leading_zero", "float"]))
def test_integers_convert_only_when_lossless(n: int, form: str) -> None:
    written = {
        "plain": str(n),
        "quoted": f'"{n}"',
        "dot0": f"{n}.0",
        "leading_zero": ("-" if n < 0 else "") + "0" + str(abs(n)),
        "float": f"{n}.5",
    }[form]
    result = extract(_seed_with(quality=written).encode("utf-8"), Source("q.md", "0" * 64), "r")
    fits = INT64_MIN <= n <= INT64_MAX
    if form == "float":
        assert isinstance(result, Problem) and (result.reason, result.field) == ("bad_integer", "quality")
    elif form == "leading_zero":
        assert isinstance(result, Problem) and (result.reason, result.field) == ("ambiguous_integer", "quality")
    elif fits:
        assert isinstance(result, Loaded), result
        assert column(result.rows.articles, "articles", "quality") == [n]
    else:
        assert isinstance(result, Problem) and (result.reason, result.field) == ("bad_integer", "quality")


# --- (b) accounting over random folders ---------------------------------------------------------------


def _valid(url: str) -> str:
    return TEMPLATE_TEXT.replace(TEMPLATE_URL, url)


def _swap(old: str, new: str) -> Any:
    def apply(text: str) -> str:
        assert text.count(old) == 1, old
        return text.replace(old, new)

    return apply


BROKEN: dict[str, tuple[Any, str, str]] = {
    "bad_integer": (_swap("\nquality: 59\n", "\nquality: 1.5\n"), "contract", "bad_integer"),
    "bad_boolean": (_swap("\npublished: false\n", "\npublished: yes\n"), "contract", "bad_boolean"),
    "no_title": (
        _swap('title: "Artificial Empathy: A Human Construct Borrowed by AI"\n', ""),
        "contract",
        "missing_field",
    ),
    "bad_timestamp": (
        _swap("publishedDateTime: 2023-10-08T16:23:00Z", "publishedDateTime: 2023-02-30T10:00:00Z"),
        "contract",
        "bad_timestamp",
    ),
    "no_frontmatter": (lambda t: t.removeprefix("---\n"), "frontmatter", "no_frontmatter"),
    "unclosed": (lambda t: t.rstrip("\n").removesuffix("---"), "frontmatter", "unclosed_frontmatter"),
    "alias": (_swap("category: news", "category: &c news\ntype2: *c"), "yaml", "yaml_alias"),
    "tag": (_swap("category: news", "category: !!binary bmV3cw=="), "yaml", "yaml_tag"),
    "duplicate_key": (_swap("category: news", "category: news\ncategory: again"), "yaml", "duplicate_key"),
    "syntax": (_swap("category: news", "category: news: oops"), "yaml", "yaml_syntax"),
    "too_deep": (_swap("category: news", "category: news\nd: " + "[" * 80 + "]" * 80), "yaml", "nesting_too_deep"),
    "nul": (_swap("category: news", "category: ne\x00ws"), "decode", "control_character"),
    "invalid_utf8": (lambda t: t.encode("utf-8").replace(b"news", b"n\xc3ws", 1), "decode", "invalid_utf8"),
}
KINDS = ["valid"] * 4 + sorted(BROKEN) + ["hidden", "not_a_seed"]
FOLDERS = ["", "sub/", "sub/deeper/", "zz/"]


@st.composite
def folder_specs(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 14))
    specs = []
    for i in range(n):
        specs.append(
            {
                "i": i,
                "kind": draw(st.sampled_from(KINDS)),
                "folder": draw(st.sampled_from(FOLDERS)),
                "url": draw(st.sampled_from(["shared-1", "shared-2", f"own-{i}"])),
            }
        )
    return specs


def _rel(spec: dict[str, Any]) -> str:
    if spec["kind"] == "hidden":
        return f"{spec['folder']}.h{spec['i']:03d}.md"
    if spec["kind"] == "not_a_seed":
        return f"{spec['folder']}f{spec['i']:03d}.json"
    return f"{spec['folder']}f{spec['i']:03d}.{('md', 'txt', 'markdown')[spec['i'] % 3]}"


def _content(spec: dict[str, Any]) -> bytes:
    text = _valid(f"https://props.example/{spec['url']}")
    if spec["kind"] in BROKEN:
        out = BROKEN[spec["kind"]][0](text)
        return out if isinstance(out, bytes) else out.encode("utf-8")
    return text.encode("utf-8")


def _write(root: Path, spec: dict[str, Any], bump: int) -> None:
    path = root / _rel(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_content(spec))
    t = 1_700_000_000_000_000_000 + bump * 1_000_000_000  # distinct mtimes even on coarse clocks
    os.utime(path, ns=(t, t))


def _expected(specs: list[dict[str, Any]]) -> dict[str, tuple[str, str | None, str | None]]:
    """rel -> (status, stage, reason) for every file discovery must report."""
    out: dict[str, tuple[str, str | None, str | None]] = {}
    owners: dict[str, str] = {}
    for spec in sorted(specs, key=lambda s: _rel(s).encode()):
        rel, kind = _rel(spec), spec["kind"]
        if kind in ("hidden", "not_a_seed"):
            continue
        if kind in BROKEN:
            out[rel] = ("rejected", BROKEN[kind][1], BROKEN[kind][2])
        elif spec["url"] in owners:
            out[rel] = ("duplicate", "duplicate", "duplicate_identity")
        else:
            owners[spec["url"]] = rel
            out[rel] = ("loaded", None, None)
    return out


def _check_run(warehouse: Path, counts: dict[str, int], specs: list[dict[str, Any]]) -> dict[str, Any]:
    expected = _expected(specs)
    files = catalog_rows(warehouse, "source_files")
    paths = [r["source_path"] for r in files]
    assert len(paths) == len(set(paths)), "a file appears twice in source_files"
    assert set(paths) == set(expected), "source_files must list exactly the discovered files"
    got = {r["source_path"]: (r["status"], r["stage"], r["reason"]) for r in files}
    assert got == expected
    assert counts["files_seen"] == len(expected)
    assert counts["files_seen"] == counts["files_loaded"] + counts["files_rejected"] + counts["files_duplicate"]
    assert counts["files_seen"] == counts["files_new"] + counts["files_changed"] + counts["files_unchanged"]
    last = max(catalog_rows(warehouse, "load_runs"), key=lambda r: r["run_id"])
    for key, value in counts.items():
        assert last[key] == value, key
    rejects = {r["source_path"] for r in catalog_rows(warehouse, "rejects")}
    assert rejects == {p for p, (status, _, _) in expected.items() if status != "loaded"}
    articles = [r["source_path"] for r in catalog_rows(warehouse, "articles")]
    assert sorted(articles) == sorted(p for p, (status, _, _) in expected.items() if status == "loaded")
    return expected


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(folder_specs(), st.data())
def test_every_discovered_file_is_accounted_for_once(specs: list[dict[str, Any]], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory(prefix="props-") as tmp:
        root = Path(tmp)
        seeds, warehouse = root / "seeds", root / "warehouse"
        seeds.mkdir()
        for spec in specs:
            _write(seeds, spec, bump=0)
        cfg = Settings(seeds=str(seeds), warehouse=str(warehouse), workers=2)

        run = run_all(cfg, make_run_id(utc_now()))
        expected = _check_run(warehouse, run.need("built").counts, specs)
        report = {e["path"]: e for e in validate_folder(cfg.resolved())}
        assert set(report) == set(expected)
        for rel, (status, stage, reason) in expected.items():
            assert report[rel]["ok"] == (status == "loaded"), rel
            if status != "loaded":
                assert (report[rel]["stage"], report[rel]["reason"]) == (stage, reason), rel

        # Second, incremental run: some files change kind, some disappear, the rest stay untouched.
        survivors = []
        deleted = 0
        for spec in specs:
            action = data.draw(st.sampled_from(["keep", "keep", "rewrite", "delete"]), label=_rel(spec))
            if action == "delete":
                (seeds / _rel(spec)).unlink()
                deleted += _rel(spec) in expected
                continue
            if action == "rewrite":
                new_kind = data.draw(st.sampled_from(["valid", *sorted(BROKEN)]), label="new kind")
                if spec["kind"] in ("hidden", "not_a_seed"):
                    new_kind = spec["kind"]
                spec = {**spec, "kind": new_kind}
                _write(seeds, spec, bump=1)
            survivors.append(spec)
        run2 = run_all(cfg, make_run_id(utc_now()))
        _check_run(warehouse, run2.need("built").counts, survivors)
        assert run2.need("built").counts["files_deleted"] == deleted


def test_a_touched_duplicate_takes_over_when_the_winner_breaks(tmp_path: Path) -> None:
    """Found by the property test above: the winner of an identity breaks while the loser is only touched
    (same bytes, new mtime). The loser must load; it was left a duplicate of a rejected file and the
    article vanished from the snapshot."""
    seeds, warehouse = tmp_path / "seeds", tmp_path / "warehouse"
    seeds.mkdir()
    winner = {"i": 5, "kind": "valid", "folder": "", "url": "shared-2"}
    loser = {"i": 9, "kind": "valid", "folder": "", "url": "shared-2"}
    for spec in (winner, loser):
        _write(seeds, spec, bump=0)
    cfg = Settings(seeds=str(seeds), warehouse=str(warehouse), workers=1)
    run = run_all(cfg, make_run_id(utc_now()))
    _check_run(warehouse, run.need("built").counts, [winner, loser])
    broken = {**winner, "kind": "no_title"}
    _write(seeds, broken, bump=1)
    _write(seeds, loser, bump=1)  # rewritten with the same bytes
    run = run_all(cfg, make_run_id(utc_now()))
    expected = _check_run(warehouse, run.need("built").counts, [broken, loser])
    assert expected[_rel(loser)][0] == "loaded"
