"""Nothing lost, nothing invented: every hostile input is loaded faithfully or quarantined with a reason.

The hostile corpus lives in tests/data/hostile/ (one small file per class, each derived from
seeds/000_0d86a7039b408f6d.txt) with the expected outcome of each file in EXPECTED.json. Inputs that
cannot be committed (a huge file, a symlink, a FIFO, a non-UTF-8 file name) are made at runtime.

"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline import schema
from pipeline.read.extract import Loaded, extract
from pipeline.read.normalize import Source, article_id
from pipeline.read.problems import Problem
from tests.conftest import SEEDS, catalog_rows, cli_env, run_cli, run_pipeline

HOSTILE = Path(__file__).resolve().parent / "data" / "hostile"
EXPECTED: dict[str, dict[str, Any]] = json.loads((HOSTILE / "EXPECTED.json").read_text(encoding="utf-8"))
SUB = "hostile"  # the hostile files sit in this subfolder of the seeds copy
TEMPLATE = SEEDS / "000_0d86a7039b408f6d.txt"
TEMPLATE_URL = "https://www.psychologytoday.com/us/blog/the-digital-self/202310/artificial-empathy-a-human-construct-borrowed-by-ai"
DEFAULT_PATTERNS = ("*.md", "*.markdown", "*.txt")
RUN_TIMEOUT = 120


# --- helpers -------------------------------------------------------------------------------------


def shipped_seeds() -> list[str]:
    """Relative paths of the shipped seeds, found independently of pipeline.discover."""
    out = []
    for folder, dirs, files in os.walk(SEEDS):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and any(fnmatch.fnmatchcase(name, p) for p in DEFAULT_PATTERNS):
                out.append(Path(folder, name).relative_to(SEEDS).as_posix())
    return sorted(out)


def template(url: str) -> str:
    """The template seed with its own identity URL (so it does not collide with the shipped copy)."""
    text = TEMPLATE.read_text(encoding="utf-8")
    assert text.count(f'"{TEMPLATE_URL}"') == 2
    return text.replace(f'"{TEMPLATE_URL}"', f'"{url}"')


table = catalog_rows  # the name tests/test_values.py imports from here


def by_path(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        assert r["source_path"] not in out, f"{r['source_path']} appears twice"
        out[r["source_path"]] = r
    return out


def tree_state(root: Path, skip: Path) -> dict[str, tuple[str, int, str]]:
    """Every entry under ``root`` except ``skip``: kind, size and content hash (FIFOs are not opened)."""
    state = {}
    for folder, dirs, files in os.walk(root):
        if Path(folder) == skip or skip in Path(folder).parents:
            continue
        for name in dirs + files:
            p = Path(folder, name)
            if p == skip:
                continue
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                state[rel] = ("link", 0, os.readlink(p))
            elif p.is_file():
                state[rel] = ("file", p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            elif p.is_dir():
                state[rel] = ("dir", 0, "")
            else:
                state[rel] = ("other", 0, "")
    return state


def validate_json(seeds: Path, *extra: str) -> tuple[int, dict[str, dict[str, Any]]]:
    proc = run_cli("validate", "--seeds", str(seeds), "--format", "json", *extra, check=False, timeout=RUN_TIMEOUT)
    entries = json.loads(proc.stdout)
    paths = [e["path"] for e in entries]
    assert len(paths) == len(set(paths)), "validate lists a file twice"
    return proc.returncode, {e["path"]: e for e in entries}


def assert_shipped_loaded(source_files: dict[str, dict[str, Any]], prefix: str = "") -> None:
    for rel in shipped_seeds():
        row = source_files.get(prefix + rel)
        assert row is not None, f"shipped seed {rel} is missing from source_files"
        assert row["status"] == "loaded", f"shipped seed {rel}: {row['status']} {row['reason']} {row['message']}"


def article_value(result: Loaded, column: str) -> Any:
    return result.rows.articles[0][schema.table("articles").column_names.index(column)]


def extract_text(text: str | bytes) -> Loaded | Problem:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return extract(data, Source("case.md", "0" * 64), "test-run")


# --- one pipeline run over shipped seeds + the hostile corpus -------------------------------------


@dataclass
class HostileRun:
    root: Path
    seeds: Path
    warehouse: Path
    cwd: Path
    returncode: int
    stdout: str
    stderr: str
    before: dict[str, tuple[str, int, str]]
    after: dict[str, tuple[str, int, str]]
    source_files: dict[str, dict[str, Any]]
    rejects: dict[str, dict[str, Any]]
    articles: dict[str, dict[str, Any]]
    load_runs: list[dict[str, Any]]


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> HostileRun:
    root = tmp_path_factory.mktemp("quarantine")
    seeds = root / "seeds"
    shutil.copytree(SEEDS, seeds)
    shutil.copytree(HOSTILE, seeds / SUB, ignore=shutil.ignore_patterns("EXPECTED.json"))
    cwd = root / "cwd"  # the run's working directory: a `touch hostile_pwned` would land here
    cwd.mkdir()
    warehouse = root / "warehouse"
    before = tree_state(root, warehouse)
    proc = run_pipeline(seeds, warehouse, "--format", "json", cwd=cwd, check=False, timeout=RUN_TIMEOUT)
    after = tree_state(root, warehouse)
    assert proc.returncode == 0, f"pipeline run exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return HostileRun(
        root=root,
        seeds=seeds,
        warehouse=warehouse,
        cwd=cwd,
        returncode=proc.returncode,
        stdout=proc.stdout,
        stderr=proc.stderr,
        before=before,
        after=after,
        source_files=by_path(catalog_rows(warehouse, "source_files")),
        rejects=by_path(catalog_rows(warehouse, "rejects")),
        articles=by_path(catalog_rows(warehouse, "articles")),
        load_runs=catalog_rows(warehouse, "load_runs"),
    )


def test_manifest_covers_every_hostile_file() -> None:
    on_disk = {p.name for p in HOSTILE.iterdir()} - {"EXPECTED.json"}
    assert on_disk == set(EXPECTED), "EXPECTED.json and tests/data/hostile/ disagree"
    for name, exp in EXPECTED.items():
        assert exp["status"] in ("loaded", "rejected", "duplicate", "not_discovered"), name
        if exp["status"] in ("rejected", "duplicate"):
            assert {"stage", "reason"} <= set(exp), name


def test_run_exits_zero_despite_rejects(hostile_run: HostileRun) -> None:
    assert hostile_run.returncode == 0
    summary = json.loads(hostile_run.stdout)
    assert summary["files"]["rejected"] == sum(e["status"] == "rejected" for e in EXPECTED.values())
    assert summary["files"]["duplicate"] == sum(e["status"] == "duplicate" for e in EXPECTED.values())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_file_outcome(hostile_run: HostileRun, name: str) -> None:
    exp = EXPECTED[name]
    rel = f"{SUB}/{name}"
    row = hostile_run.source_files.get(rel)
    if exp["status"] == "not_discovered":
        assert row is None, f"{name} should not be discovered"
        assert rel not in hostile_run.rejects
        return
    assert row is not None, f"{name} is missing from source_files (silently lost)"
    assert row["status"] == exp["status"], f"{name}: {row['status']} {row['reason']}: {row['message']}"

    if exp["status"] == "loaded":
        assert rel not in hostile_run.rejects
        assert row["stage"] is None and row["reason"] is None and row["message"] is None
        article = hostile_run.articles.get(rel)
        assert article is not None, f"{name} is loaded but has no article row"
        assert article["article_id"] == row["article_id"]
        for column, value in exp.get("article", {}).items():
            got = article[column]
            if column == "published_at":
                value = datetime.fromisoformat(value).astimezone(UTC).replace(tzinfo=None)
                assert got.tzinfo is None  # the catalog's views hand out UTC wall time (issue 20)
            assert got == value, f"{name}: articles.{column} = {got!r}, expected {value!r}"
        if "partition" in exp:
            assert row["partition"] == exp["partition"]
        if "unknown_keys" in exp:
            assert sorted(row["unknown_keys"]) == exp["unknown_keys"]
        if "identity_url" in exp:
            assert row["article_id"] == article_id(exp["identity_url"])
        return

    # rejected or duplicate: quarantined with a stable reason and a message naming the place
    assert rel not in hostile_run.articles, f"{name} is quarantined but has an article row"
    reject = hostile_run.rejects.get(rel)
    assert reject is not None, f"{name} is {row['status']} but not in rejects"
    for key in ("stage", "reason", "message", "line", "column", "field", "source_sha256"):
        assert reject[key] == row[key], f"{name}: rejects.{key} != source_files.{key}"
    assert (row["stage"], row["reason"]) == (exp["stage"], exp["reason"]), f"{name}: {row['message']}"
    assert row["message"] and row["message"].strip()
    if "line" in exp:
        assert row["line"] == exp["line"], f"{name}: line {row['line']} ({row['message']})"
        if row["stage"] == "yaml":
            assert f"line {exp['line']}" in row["message"]
    if "field" in exp:
        assert row["field"] == exp["field"], f"{name}: field {row['field']} ({row['message']})"
        if row["stage"] == "contract":
            assert row["message"].startswith(f"{exp['field']}:"), row["message"]
    if row["stage"] == "decode":
        assert row["line"] is not None and row["column"] is not None
        assert f"line {row['line']}" in row["message"]
    if row["stage"] == "duplicate":
        winner = sorted(
            p
            for p, r in hostile_run.source_files.items()
            if r["article_id"] == row["article_id"] and r["status"] == "loaded"
        )
        assert len(winner) == 1 and winner[0] < rel, "the smallest path must win the identity URL"
        assert winner[0] in row["message"]
    if row["stage"] not in ("read",):
        assert row["source_sha256"] == hashlib.sha256((HOSTILE / name).read_bytes()).hexdigest()


def test_every_shipped_seed_still_loads(hostile_run: HostileRun) -> None:
    assert_shipped_loaded(hostile_run.source_files)
    for rel in shipped_seeds():
        assert rel in hostile_run.articles


def test_load_runs_accounting(hostile_run: HostileRun) -> None:
    (run,) = hostile_run.load_runs
    discovered = len(shipped_seeds()) + sum(e["status"] != "not_discovered" for e in EXPECTED.values())
    assert run["files_seen"] == discovered == len(hostile_run.source_files)
    assert run["files_seen"] == run["files_loaded"] + run["files_rejected"] + run["files_duplicate"]
    assert run["files_seen"] == run["files_new"] + run["files_changed"] + run["files_unchanged"]
    assert run["files_loaded"] == len(shipped_seeds()) + sum(e["status"] == "loaded" for e in EXPECTED.values())
    assert run["files_rejected"] == sum(e["status"] == "rejected" for e in EXPECTED.values())
    assert run["files_duplicate"] == sum(e["status"] == "duplicate" for e in EXPECTED.values())
    assert run["rows_articles"] == run["files_loaded"] == len(hostile_run.articles)
    assert len(hostile_run.rejects) == run["files_rejected"] + run["files_duplicate"]
    statuses = [r["status"] for r in hostile_run.source_files.values()]
    assert statuses.count("loaded") == run["files_loaded"]
    assert statuses.count("rejected") == run["files_rejected"]
    assert statuses.count("duplicate") == run["files_duplicate"]


def test_loaded_values_are_exact(hostile_run: HostileRun) -> None:
    """Spot checks beyond EXPECTED.json: YAML-1.1 lookalikes stay text, conversions are lossless."""
    a = {name: hostile_run.articles[f"{SUB}/{name}"] for name, e in EXPECTED.items() if e["status"] == "loaded"}
    assert a["title_no.md"]["title"] == "no"
    assert a["title_0777.md"]["title"] == "0777"
    assert a["quality_quoted_80.md"]["quality"] == 80
    assert a["quality_80_0.md"]["quality"] == 80
    assert a["timestamp_naive.md"]["published_at"] == datetime(2023, 10, 8, 16, 23)
    assert a["timestamp_date_only.md"]["published_at"] == datetime(2023, 10, 8)
    assert a["timestamp_offset.md"]["published_at"] == datetime(2023, 10, 31, 23, 30)
    assert a["title_sql.md"]["title"] == "x'); DROP TABLE articles; --"
    assert a["title_path.md"]["title"] == "../../etc/passwd"
    assert a["keys_on_and_1.md"]["extra"] == '{"1":"one","on":"yes"}'
    assert a["weburl_missing_original_present.md"]["web_url"] is None
    body = a["body_with_dashes.md"]["body"]
    assert body.splitlines().count("---") == 2
    for name in ("crlf.md", "bom.md"):
        assert a[name]["title"] == "Artificial Empathy: A Human Construct Borrowed by AI"
        assert a[name]["published_at"] == datetime(2023, 10, 8, 16, 23)
        assert a[name]["quality"] == 59 and a[name]["heat"] == -1 and a[name]["is_published"] is False
    assert "\r" not in a["crlf.md"]["title"] and "\ufeff" not in a["bom.md"]["category"]
    # the child tables of a loaded hostile file are complete too
    topics = catalog_rows(
        hostile_run.warehouse,
        "article_topics",
        f"WHERE article_id = '{a['title_sql.md']['article_id']}' ORDER BY position",
    )
    assert [t["topic"] for t in topics] == ["AI in Healthcare", "AI"]


def test_nothing_written_outside_the_warehouse(hostile_run: HostileRun) -> None:
    assert hostile_run.after == hostile_run.before, "the run changed files outside its warehouse"
    assert list(hostile_run.cwd.iterdir()) == [], "something was written into the run's working directory"


def test_validate_agrees_with_the_run(hostile_run: HostileRun) -> None:
    code, entries = validate_json(hostile_run.seeds)
    assert code == 1
    assert set(entries) == set(hostile_run.source_files)
    for rel, row in hostile_run.source_files.items():
        e = entries[rel]
        if row["status"] == "loaded":
            assert e["ok"] is True, f"{rel}: validate says {e}"
        else:
            assert e["ok"] is False
            assert (e["stage"], e["reason"]) == (row["stage"], row["reason"]), rel
            assert e["line"] == row["line"] and e["field"] == row["field"], rel


def test_validate_shipped_seeds_is_clean(seeds: Path) -> None:
    code, entries = validate_json(seeds)
    assert code == 0
    assert sorted(entries) == shipped_seeds()
    assert all(e["ok"] for e in entries.values())


# --- runtime-created inputs -----------------------------------------------------------------------


def test_huge_file_is_quarantined_not_truncated(seeds: Path, warehouse: Path) -> None:
    big = seeds / "huge.md"
    big.write_text(template("https://hostile.example/huge") + "x" * 50_000 + "\n", encoding="utf-8")
    proc = run_pipeline(seeds, warehouse, "--max-file-bytes", "20000", check=False, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    files = by_path(catalog_rows(warehouse, "source_files"))
    row = files["huge.md"]
    assert (row["status"], row["stage"], row["reason"]) == ("rejected", "read", "too_large")
    assert "20,000" in row["message"]
    assert "huge.md" in by_path(catalog_rows(warehouse, "rejects"))
    assert_shipped_loaded(files)
    code, entries = validate_json(seeds, "--max-file-bytes", "20000")
    assert code == 1 and entries["huge.md"]["reason"] == "too_large"


def test_crash_isolation(seeds: Path, warehouse: Path) -> None:
    victim = "2024/012_1dc455e33948ba69.md"
    env = cli_env(PIPELINE_FAULT_CRASH_ON="012_1dc455")
    proc = run_pipeline(seeds, warehouse, "--workers", "2", env=env, check=False, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    files = by_path(catalog_rows(warehouse, "source_files"))
    row = files[victim]
    assert (row["status"], row["stage"], row["reason"]) == ("rejected", "yaml", "parser_crash")
    assert victim in by_path(catalog_rows(warehouse, "rejects"))
    others = [r for r in shipped_seeds() if r != victim]
    assert all(files[r]["status"] == "loaded" for r in others)
    (run,) = catalog_rows(warehouse, "load_runs")
    assert run["files_loaded"] == len(others) and run["files_rejected"] == 1
    # The crash is not sticky: without the fault the file loads on the next run.
    proc = run_pipeline(seeds, warehouse, check=False, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert by_path(catalog_rows(warehouse, "source_files"))[victim]["status"] == "loaded"
    assert catalog_rows(warehouse, "rejects") == []


def test_fixed_reject_loads_on_next_run(seeds: Path, warehouse: Path) -> None:
    path = seeds / "fixme.md"
    broken = template("https://hostile.example/fixme").replace("\nquality: 59\n", "\nquality: 1.5\n")
    path.write_text(broken, encoding="utf-8")
    assert run_pipeline(seeds, warehouse, check=False, timeout=RUN_TIMEOUT).returncode == 0
    assert by_path(catalog_rows(warehouse, "rejects"))["fixme.md"]["reason"] == "bad_integer"
    path.write_text(broken.replace("\nquality: 1.5\n", "\nquality: 61\n"), encoding="utf-8")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a change even on coarse clocks
    proc = run_pipeline(seeds, warehouse, check=False, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert catalog_rows(warehouse, "rejects") == []
    files = by_path(catalog_rows(warehouse, "source_files"))
    assert files["fixme.md"]["status"] == "loaded" and files["fixme.md"]["reason"] is None
    assert by_path(catalog_rows(warehouse, "articles"))["fixme.md"]["quality"] == 61
    last = max(catalog_rows(warehouse, "load_runs"), key=lambda r: r["run_id"])
    assert (last["files_changed"], last["files_rejected"], last["files_parsed"]) == (1, 0, 1)
    assert last["files_seen"] == last["files_loaded"] + last["files_rejected"] + last["files_duplicate"]


def _make_refused(kind: str, seeds: Path, outside: Path) -> tuple[str, str]:
    """Create a file discovery must refuse; returns (path as reported, reason)."""
    if kind == "symlink_outside":
        target = outside / "outside.md"
        target.write_text(template("https://hostile.example/outside"), encoding="utf-8")
        (seeds / "link_out.md").symlink_to(target)
        return "link_out.md", "link_outside_seeds"
    if kind == "fifo":
        os.mkfifo(seeds / "x.md")
        return "x.md", "not_regular_file"
    assert kind == "bad_file_name"
    name = b"bad_\xff_name.md"
    try:
        with open(os.path.join(os.fsencode(seeds), name), "wb") as fh:
            fh.write(template("https://hostile.example/badname").encode("utf-8"))
    except OSError as exc:  # pragma: no cover - file systems that insist on UTF-8 names
        pytest.skip(f"cannot create a non-UTF-8 file name here: {exc}")
    return "bad_\\xff_name.md", "bad_file_name"


REFUSED_KINDS = ["symlink_outside", "fifo", "bad_file_name"]


@pytest.mark.parametrize("kind", REFUSED_KINDS)
def test_refused_entries_reported_by_validate_without_hanging(kind: str, seeds: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    rel, reason = _make_refused(kind, seeds, outside)
    code, entries = validate_json(seeds)  # a FIFO that were opened would hang here (timeout fails the test)
    assert code == 1
    assert entries[rel]["ok"] is False and (entries[rel]["stage"], entries[rel]["reason"]) == ("read", reason)
    assert all(entries[r]["ok"] for r in shipped_seeds())


def test_fifo_does_not_hang_the_run(seeds: Path, warehouse: Path) -> None:
    """A FIFO is never opened (that would block the run until RUN_TIMEOUT fails the test): it is
    quarantined as not_regular_file, the shipped seeds load, and the run exits 0 - also the next,
    incremental run, which must not open it either."""
    os.mkfifo(seeds / "x.md")
    for attempt in ("first run", "second run"):
        proc = run_pipeline(seeds, warehouse, "--format", "json", check=False, timeout=RUN_TIMEOUT)
        assert proc.returncode == 0, f"{attempt} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        summary = json.loads(proc.stdout)
        assert (summary["files"]["rejected"], summary["files"]["loaded"]) == (1, len(shipped_seeds())), attempt
        (reject,) = catalog_rows(warehouse, "rejects")
        assert reject["source_path"] == "x.md", attempt
        assert (reject["stage"], reject["reason"]) == ("read", "not_regular_file"), f"{attempt}: {reject['message']}"
        assert reject["source_sha256"] is None and reject["line"] is None, attempt  # never read
        assert reject["message"] and reject["message"].strip(), attempt
        files = by_path(catalog_rows(warehouse, "source_files"))
        assert files["x.md"]["status"] == "rejected", attempt
        assert_shipped_loaded(files)


@pytest.mark.parametrize("kind", REFUSED_KINDS)
def test_refused_entries_are_quarantined_by_the_run(kind: str, seeds: Path, warehouse: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    rel, reason = _make_refused(kind, seeds, outside)
    proc = run_pipeline(seeds, warehouse, check=False, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    files = by_path(catalog_rows(warehouse, "source_files"))
    assert (files[rel]["status"], files[rel]["stage"], files[rel]["reason"]) == ("rejected", "read", reason)
    assert rel in by_path(catalog_rows(warehouse, "rejects"))
    assert_shipped_loaded(files)


# --- a value that makes a converter raise is a reject of its file, not the end of the run ----------

CRASHERS = {
    # name: (replace old, by new, expected reason, expected field)
    "ts_year_1_with_offset": (
        "publishedDateTime: 2023-10-08T16:23:00Z",
        "publishedDateTime: 0001-01-01T00:00:00+01:00",
        "bad_timestamp",
        "publishedDateTime",
    ),
    "ts_year_9999_with_offset": (
        "publishedDateTime: 2023-10-08T16:23:00Z",
        "publishedDateTime: 9999-12-31T23:00:00-05:00",
        "bad_timestamp",
        "publishedDateTime",
    ),
    "weburl_port_out_of_range": (
        'webUrl: "https://hostile.example/crash"',
        'webUrl: "https://hostile.example:99999/crash"',
        "bad_url",
        "webUrl",
    ),
    "weburl_broken_ipv6": (
        'webUrl: "https://hostile.example/crash"',
        'webUrl: "https://[hostile.example/crash"',
        "bad_url",
        "webUrl",
    ),
    "related_weburl_port_out_of_range": (
        'webUrl: "https://www.wsj.com/',
        'webUrl: "https://www.wsj.com:99999/',
        "bad_url",
        "related[0].webUrl",
    ),
}


@pytest.mark.parametrize("case", sorted(CRASHERS))
def test_exception_in_one_file_does_not_stop_the_run(case: str, seeds: Path, warehouse: Path) -> None:
    old, new, reason, field = CRASHERS[case]
    text = template("https://hostile.example/crash")
    assert text.count(old) == 1
    (seeds / "crash.md").write_text(text.replace(old, new), encoding="utf-8")
    proc = run_pipeline(seeds, warehouse, check=False, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    files = by_path(catalog_rows(warehouse, "source_files"))
    assert (files["crash.md"]["stage"], files["crash.md"]["reason"], files["crash.md"]["field"]) == (
        "contract",
        reason,
        field,
    )
    assert_shipped_loaded(files)


# --- edge cases of one file's extraction (checked on extract() directly: fast and exact) -------------


@pytest.mark.parametrize(
    "snippet",
    ["x: &k title2\n*k : hello", "&k zzz: 1\ny: *k"],
    ids=["alias_as_key", "alias_of_anchored_key"],
)
def test_alias_in_key_position_is_refused(snippet: str) -> None:
    text = template("https://hostile.example/alias-key").replace("category: news", f"category: news\n{snippet}", 1)
    result = extract_text(text)
    assert isinstance(result, Problem), f"loaded with extra={article_value(result, 'extra')}"
    assert (result.stage, result.reason, result.line) == ("yaml", "yaml_alias", 4)


def test_alias_error_names_the_alias_line() -> None:
    result = extract_text((HOSTILE / "alias_bomb.md").read_bytes())
    assert isinstance(result, Problem) and result.reason == "yaml_alias"
    assert result.line == 4, result.message  # line 3 defines &a, line 4 is the first *a


def test_deep_block_nesting_error_has_a_line() -> None:
    result = extract_text((HOSTILE / "nesting_100_block.md").read_bytes())
    assert isinstance(result, Problem) and result.reason == "nesting_too_deep"
    assert result.line is not None and result.column is not None, result.message


TITLE_LINE = 'title: "Artificial Empathy: A Human Construct Borrowed by AI"'


def test_nel_in_quoted_text_is_refused_not_silently_changed() -> None:
    """U+0085 (NEL) is a line break to YAML 1.1: a quoted title holding it would load as "a b". The
    decoder refuses it, like every C1 control, before YAML sees it, naming the character and place."""
    text = template("https://hostile.example/nel").replace(TITLE_LINE, 'title: "a\x85b"')
    result = extract_text(text)
    assert isinstance(result, Problem), f"loaded with title={article_value(result, 'title')!r}"
    assert (result.stage, result.reason, result.line, result.column) == ("decode", "control_character", 3, 10)
    assert "U+0085" in result.message and "line 3, column 10" in result.message, result.message


def test_c1_control_character_reject_names_the_line() -> None:
    text = template("https://hostile.example/c1").replace(TITLE_LINE, 'title: "a\x80b"')
    result = extract_text(text)
    assert isinstance(result, Problem)
    assert (result.reason, result.line) == ("control_character", 3), result.message


def test_lowercase_z_timestamp_loads() -> None:
    text = template("https://hostile.example/z").replace(
        "publishedDateTime: 2023-10-08T16:23:00Z", "publishedDateTime: 2023-10-08T16:23:00z"
    )
    result = extract_text(text)
    assert isinstance(result, Loaded), result
    assert article_value(result, "published_at") == datetime(2023, 10, 8, 16, 23, tzinfo=UTC)


def test_body_keeps_first_line_indentation() -> None:
    body = "    indented code\n    second line"
    result = extract_text(template("https://hostile.example/body") + body + "\n")
    assert isinstance(result, Loaded)
    assert article_value(result, "body") == body
