"""The local read path under hostile file states: one bad file never stops a run, a file swapped
after discovery is never followed or waited on, and no state gets stuck across runs.

Everything here uses real files and real processes: FIFOs, sockets, symlinks, far-future mtimes
set with ``os.utime``, byte names. Swaps between discovery and read call the batch worker
(``engine.parse.process_batch``) directly with jobs made before the swap; the state-transition
test drives the real CLI (``pipeline run --orchestrator none``) through random sequences of file
states and compares every state reached with a fresh load of the same folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.engine.parse import BatchResult, BatchSpec, Job, process_batch
from pipeline.engine.validate import format_report
from pipeline.read.discover import Found, discover, raw_name, shown_name
from pipeline.read.extract import decode, extract, split_frontmatter
from pipeline.read.normalize import Source
from pipeline.read.problems import Problem, ProblemError
from pipeline.report import format_summary, printable, summary_markdown
from pipeline.storage.location import Location
from tests.conftest import REPO, SEEDS, cli_env, export_tables, run_cli
from tests.test_incremental import without_run_columns

TEMPLATE = SEEDS / "000_0d86a7039b408f6d.txt"
TEMPLATE_URL = "https://www.psychologytoday.com/us/blog/the-digital-self/202310/artificial-empathy-a-human-construct-borrowed-by-ai"
PATTERNS = ("*.md", "*.markdown", "*.txt")
FAR_FUTURE_NS = 2**63 + 5  # past 2262-04-11: does not fit the int64 mtime_ns column
CAP = 8192  # --max-file-bytes of the CLI runs here: "huge" is just over it
HANG_GUARD_S = 60  # a read that blocks would hold the thread this long (a hang guard, not a timing check)


def doc(url: str, title: str = "A Seed") -> str:
    """A valid seed with its own identity URL and title."""
    text = TEMPLATE.read_text(encoding="utf-8").replace(TEMPLATE_URL, url)
    assert url in text
    return text.replace('title: "', f'title: "{title} ', 1)


def jobs_for(seeds: Path) -> list[Job]:
    """Jobs exactly as a run makes them from discovery (before any swap)."""
    found = discover(Location.parse(str(seeds)), PATTERNS)
    return [Job(f.rel, f.size, f.mtime_ns, f.etag, f.target) for f in found.found()]


def run_batch(seeds: Path, jobs: list[Job], staging: Path) -> BatchResult:
    """``process_batch`` in a thread, so that a read that blocks fails the test instead of hanging it."""
    spec = BatchSpec(0, tuple(jobs), Location.parse(str(seeds)), Location.parse(str(staging)), "test", CAP)
    out: list[BatchResult] = []
    worker = threading.Thread(target=lambda: out.append(process_batch(spec)), daemon=True)
    worker.start()
    worker.join(HANG_GUARD_S)
    if worker.is_alive():
        for job in jobs:  # unblock a reader stuck in open() of a FIFO, so the thread can end
            path = seeds / job.rel
            if path.is_fifo():
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)
        pytest.fail("process_batch blocked on a file swapped after discovery")
    return out[0]


def outcome_of(result: BatchResult, rel: str) -> Any:
    (o,) = [o for o in result.outcomes if o.rel == rel]
    return o


# --- names ----------------------------------------------------------------------------------------

os_names = st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and b"\0" not in b)


@given(os_names, os_names)
def test_shown_names_are_reversible_and_injective(a: bytes, b: bytes) -> None:
    """Every byte name has one shown form, which is valid UTF-8 and gives the same bytes back."""
    name_a, name_b = os.fsdecode(a), os.fsdecode(b)
    shown_a, shown_b = shown_name(name_a), shown_name(name_b)
    shown_a.encode("utf-8")  # storable as Arrow/Parquet text
    assert os.fsencode(raw_name(shown_a)) == a
    assert (shown_a == shown_b) == (a == b)


@given(
    st.text(min_size=1, max_size=12).filter(lambda t: "\\" not in t and not any(0xD800 <= ord(c) < 0xE000 for c in t))
)
def test_valid_utf8_names_without_a_backslash_are_shown_unchanged(name: str) -> None:
    assert shown_name(name) == name


def test_byte_names_that_render_alike_get_distinct_source_paths(tmp_path: Path) -> None:
    """b'x\\xff.md' (not UTF-8) and b'x\\\\xff.md' (a real backslash) used to share 'x\\xff.md'."""
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for raw, url in ((b"x\xff.md", "https://n.example/ff"), (b"x\\xff.md", "https://n.example/backslash")):
        with open(os.path.join(os.fsencode(seeds), raw), "wb") as fh:
            fh.write(doc(url).encode())
    found = discover(Location.parse(str(seeds)), PATTERNS)
    refused = {r.rel: r.problem.reason for r in found.refused}
    loaded = [f.rel for f in found.found()]
    assert refused == {"x\\xff.md": "bad_file_name"}
    assert loaded == ["x\\\\xff.md"]
    result = run_batch(seeds, jobs_for(seeds), tmp_path / "staging")
    assert outcome_of(result, "x\\\\xff.md").status == "loaded"  # read through raw_name


def hostile_tree(seeds: Path, outside: Path) -> None:
    """Many folders (so that helper processes get some of them) holding every kind of entry discovery decides."""
    outside.mkdir()
    (outside / "secret.md").write_text(doc("https://h.example/outside"), encoding="utf-8")
    for i in range(12):
        folder = seeds / f"f{i:02d}" / "deeper"
        folder.mkdir(parents=True)
        for j in range(5):
            (folder.parent / f"doc-{j}.md").write_text(doc(f"https://h.example/{i}/{j}"), encoding="utf-8")
        (folder / "nested.txt").write_text(doc(f"https://h.example/{i}/nested"), encoding="utf-8")
        (folder.parent / ".hidden.md").write_text("hidden", encoding="utf-8")
        (folder.parent / "notes.json").write_text("{}", encoding="utf-8")
        os.symlink(folder.parent / "doc-0.md", folder.parent / "link-inside.md")
        os.symlink(outside / "secret.md", folder.parent / "link-outside.md")
        os.mkfifo(folder.parent / "pipe.md")
        with open(os.path.join(os.fsencode(folder.parent), b"bad\xff.md"), "wb") as fh:
            fh.write(b"x")
        (folder.parent / "back\\slash.md").write_text(doc(f"https://h.example/{i}/bs"), encoding="utf-8")
        os.symlink(outside, folder.parent / "linked-folder")
    os.utime(seeds / "f03" / "doc-1.md", ns=(0, FAR_FUTURE_NS))


def discovered(found: Any) -> tuple[Any, ...]:
    return (
        found.table().to_pylist(),
        [(r.rel, r.problem) for r in found.refused],
        [(r.rel, r.problem) for r in found.unlisted],
    )


@pytest.mark.parametrize("helpers", ["started", "broken"])
def test_discovery_with_helper_processes_finds_what_one_process_finds(
    helpers: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Folders listed by the parse pool's processes (started ones, or a pool that broke: this process
    lists the rest) give the same files, refusals and unlisted folders as a walk in one process."""
    from concurrent.futures.process import BrokenProcessPool

    from pipeline import faults
    from pipeline.engine.parse import IsolatingPool

    seeds = tmp_path / "seeds"
    hostile_tree(seeds, tmp_path / "outside")
    monkeypatch.setenv(faults.LIST_ERROR, "f07/")  # spawned helpers inherit it: an unlisted folder
    alone = discovered(discover(Location.parse(str(seeds)), PATTERNS))
    pool = IsolatingPool(2)
    try:
        executor = pool.helpers()
        if helpers == "started":
            assert executor.submit(os.getpid).result() != os.getpid()
        else:
            with pytest.raises(BrokenProcessPool):
                executor.submit(os._exit, 1).result()
        shared = discovered(discover(Location.parse(str(seeds)), PATTERNS, executor))
    finally:
        pool.close()
    assert shared == alone
    files, refused, unlisted = alone
    assert len(files) == 11 * 8 and [u for u, _ in unlisted] == ["f07/"]  # 11 listed folders, 8 loadable files each
    assert {p.reason for _, p in refused} == {"link_outside_seeds", "not_regular_file", "bad_file_name"}


def test_workers_get_the_environment_and_folder_of_their_pool_not_of_the_fork_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers are forked from a server started with the environment of its first use; a later pool's
    workers still see the environment (fault points, credentials) and working folder of that pool's start."""
    from pipeline.engine.parse import IsolatingPool

    mark = "PIPELINE_TEST_WORKER_MARK"
    monkeypatch.delenv(mark, raising=False)
    first = IsolatingPool(1)
    try:
        assert first.helpers().submit(os.getenv, mark).result() is None  # the fork server runs from here on
    finally:
        first.close()
    monkeypatch.setenv(mark, "set after the server started")
    monkeypatch.chdir(tmp_path)
    second = IsolatingPool(1)
    try:
        executor = second.helpers()
        assert executor.submit(os.getenv, mark).result() == "set after the server started"
        assert executor.submit(os.getcwd).result() == str(tmp_path)
    finally:
        second.close()


POOL_THEN_SLEEP = """
import os, sys, time
from pipeline.engine.parse import IsolatingPool
pool = IsolatingPool(2)
executor = pool.helpers()
pids = {executor.submit(os.getpid).result() for _ in range(20)}
print(" ".join(map(str, sorted(pids))), flush=True)
time.sleep(600)
"""


def test_workers_and_their_fork_server_end_when_the_run_is_killed() -> None:
    """A run killed with SIGKILL (no clean-up) leaves no parser process behind: each worker watches the
    process that made its pool, not its own parent (the fork server, which outlives nothing)."""
    import signal

    proc = subprocess.Popen([sys.executable, "-c", POOL_THEN_SLEEP], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert workers
        children = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        servers = [int(p) for p in children]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = set(workers) | set(servers)
    for _ in range(300):  # a bound for a stuck test, not a timing assertion: they go within ms
        left = {p for p in left if _alive(p)}
        if not left:
            break
        time.sleep(0.1)
    assert not left, f"processes left after the run was killed: {sorted(left)}"


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --- times ----------------------------------------------------------------------------------------


def test_far_future_mtime_is_stored_as_unknown_not_an_error(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "future.md").write_text(doc("https://t.example/future"), encoding="utf-8")
    os.utime(seeds / "future.md", ns=(0, FAR_FUTURE_NS))
    assert os.stat(seeds / "future.md").st_mtime_ns == FAR_FUTURE_NS  # the file system kept it
    found = discover(Location.parse(str(seeds)), PATTERNS)
    (row,) = found.found()  # building the int64 column used to raise OverflowError
    assert (row.rel, row.mtime_ns, row.size) == ("future.md", None, (seeds / "future.md").stat().st_size)


# --- swaps between discovery and read ---------------------------------------------------------------


def test_file_replaced_by_a_fifo_after_discovery_does_not_block(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "a.md").write_text(doc("https://s.example/a"), encoding="utf-8")
    (seeds / "b.md").write_text(doc("https://s.example/b"), encoding="utf-8")
    jobs = jobs_for(seeds)
    (seeds / "a.md").unlink()
    os.mkfifo(seeds / "a.md")
    result = run_batch(seeds, jobs, tmp_path / "staging")
    a = outcome_of(result, "a.md")
    assert (a.status, a.problem.reason, a.sha) == ("rejected", "unreadable", None)
    assert "FIFO" in a.problem.message
    assert outcome_of(result, "b.md").status == "loaded"


def test_file_replaced_by_a_link_outside_after_discovery_is_not_followed(tmp_path: Path) -> None:
    seeds, outside = tmp_path / "seeds", tmp_path / "outside.md"
    seeds.mkdir()
    (seeds / "a.md").write_text(doc("https://s.example/a"), encoding="utf-8")
    outside.write_text(doc("https://s.example/secret", "Outside"), encoding="utf-8")
    jobs = jobs_for(seeds)
    (seeds / "a.md").unlink()
    (seeds / "a.md").symlink_to(outside)
    a = outcome_of(run_batch(seeds, jobs, tmp_path / "staging"), "a.md")
    assert (a.status, a.problem.reason, a.sha, a.article_id) == ("rejected", "unreadable", None, None)
    assert "symbolic link" in a.problem.message


def test_folder_replaced_by_a_link_outside_after_discovery_is_not_followed(tmp_path: Path) -> None:
    seeds, outside = tmp_path / "seeds", tmp_path / "outside"
    (seeds / "sub").mkdir(parents=True)
    outside.mkdir()
    (seeds / "sub" / "a.md").write_text(doc("https://s.example/a"), encoding="utf-8")
    (outside / "a.md").write_text(doc("https://s.example/secret", "Outside"), encoding="utf-8")
    jobs = jobs_for(seeds)
    shutil.rmtree(seeds / "sub")
    (seeds / "sub").symlink_to(outside, target_is_directory=True)
    a = outcome_of(run_batch(seeds, jobs, tmp_path / "staging"), "sub/a.md")
    assert (a.status, a.problem.reason, a.sha) == ("rejected", "unreadable", None)


def test_link_inside_repointed_outside_after_discovery_is_not_followed(tmp_path: Path) -> None:
    seeds, outside = tmp_path / "seeds", tmp_path / "outside.md"
    (seeds / ".store").mkdir(parents=True)
    (seeds / ".store" / "t.md").write_text(doc("https://s.example/t"), encoding="utf-8")
    (seeds / "l.md").symlink_to(seeds / ".store" / "t.md")
    outside.write_text(doc("https://s.example/secret", "Outside"), encoding="utf-8")
    jobs = jobs_for(seeds)
    assert jobs[0].target is not None  # discovery saw a link to a file inside
    (seeds / "l.md").unlink()
    (seeds / "l.md").symlink_to(outside)
    o = outcome_of(run_batch(seeds, jobs, tmp_path / "staging"), "l.md")
    assert (o.status, o.problem.reason, o.sha) == ("rejected", "unreadable", None)
    assert "outside" in o.problem.message


def test_link_inside_is_still_read_through_its_target(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    (seeds / ".store").mkdir(parents=True)
    (seeds / ".store" / "t.md").write_text(doc("https://s.example/t"), encoding="utf-8")
    (seeds / "l.md").symlink_to(seeds / ".store" / "t.md")
    o = outcome_of(run_batch(seeds, jobs_for(seeds), tmp_path / "staging"), "l.md")
    assert o.status == "loaded"


def test_file_replaced_by_a_socket_or_deleted_after_discovery_is_its_own_reject(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for name in ("gone.md", "sock.md", "ok.md"):
        (seeds / name).write_text(doc(f"https://s.example/{name}"), encoding="utf-8")
    jobs = jobs_for(seeds)
    (seeds / "gone.md").unlink()
    (seeds / "sock.md").unlink()
    with bound_socket() as (sock, path):
        os.rename(path, seeds / "sock.md")
        result = run_batch(seeds, jobs, tmp_path / "staging")
    assert {o.rel: (o.status, o.problem and o.problem.reason) for o in result.outcomes} == {
        "gone.md": ("rejected", "unreadable"),
        "sock.md": ("rejected", "unreadable"),
        "ok.md": ("loaded", None),
    }


class bound_socket:  # noqa: N801 - used like a function
    """A real Unix socket bound in a short temporary folder (socket paths are limited to ~108 bytes)."""

    def __enter__(self) -> tuple[socket.socket, str]:
        self.folder = tempfile.mkdtemp(prefix="sk", dir="/tmp")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = os.path.join(self.folder, "s")
        self.sock.bind(path)
        return self.sock, path

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        shutil.rmtree(self.folder, ignore_errors=True)


# --- YAML and messages ------------------------------------------------------------------------------


def problem_of(text: str) -> Problem:
    result = extract(text.encode("utf-8"), Source("x.md", "0" * 64), "test")
    assert isinstance(result, Problem), result
    return result


def test_explicit_null_tag_on_text_is_refused_not_dropped() -> None:
    lines = doc("https://y.example/a").split("\n")
    at = next(i for i, x in enumerate(lines) if x.startswith("excerpt:"))
    lines[at] = 'excerpt: !!null "text"'
    text = "\n".join(lines)
    p = problem_of(text)
    line = next(i for i, x in enumerate(lines, 1) if x.startswith("excerpt: !!null"))
    assert (p.reason, p.line, p.column) == ("yaml_tag", line, len("excerpt: ") + 1)


def test_cr_only_line_endings_are_named() -> None:
    p = problem_of(doc("https://y.example/a").replace("\r\n", "\n").replace("\n", "\r"))
    assert p.reason == "no_frontmatter" and "CR-only line endings" in p.message


@pytest.mark.parametrize("char", ["\u200b", "\ufeff", "\u2060", "\u180e"])
@pytest.mark.parametrize("lead", ["", "\n\n"])
def test_invisible_character_before_the_opening_line_is_named(char: str, lead: str) -> None:
    if (lead, char) == ("", "\ufeff"):
        pytest.skip("a BOM at the very start is allowed (and not part of the text)")
    p = problem_of(lead + char + doc("https://y.example/a"))
    line = lead.count("\n") + 1
    assert (p.reason, p.line, p.column) == ("no_frontmatter", line, 1)
    assert f"U+{ord(char):04X}" in p.message and f"line {line}, column 1" in p.message


FRONTMATTER_ERRORS = {
    # name: (frontmatter lines, the text the reported position must point at, reason)
    "duplicate_key": ("title: a\ntitle: b\n", "title: b", "duplicate_key"),
    "alias": ("a: &x 1\nb: *x\n", "*x", "yaml_alias"),
    "tag": ("a: !!binary aGk=\n", "!!binary", "yaml_tag"),
    "null_tag": ('a: !!null "t"\n', "!!null", "yaml_tag"),
    "line_separator": ('a: "x\u2028y"\n', "\u2028", "control_character"),
    "control": ('a: "x\x01y"\n', "\x01", "control_character"),
    "nesting": ("a: " + "[" * 70 + "]" * 70 + "\n", "[" * 7, "nesting_too_deep"),
    "syntax": ("a: b: c\n", ": c", "yaml_syntax"),
    "flow_question": ("a: [?x]\n", "?x", "flow_question_mark"),
}


def _file_position(text: str, needle: str) -> tuple[int, int]:
    i = text.index(needle)
    return text.count("\n", 0, i) + 1, i - (text.rfind("\n", 0, i) + 1) + 1


@settings(max_examples=60, deadline=None)
@given(
    case=st.sampled_from(sorted(FRONTMATTER_ERRORS)),
    bom=st.booleans(),
    lead=st.lists(st.sampled_from(["\n", "  \n", "\t\n"]), max_size=3).map("".join),
    after=st.lists(st.sampled_from(["\n", "# note\n", "pad: 1\n"]), max_size=3).map(
        lambda xs: "".join(x.replace("pad", f"pad{i}") for i, x in enumerate(xs))
    ),
    crlf=st.booleans(),
)
def test_positions_are_the_files_own_line_and_column(case: str, bom: bool, lead: str, after: str, crlf: bool) -> None:
    """Every path that reports a position names the file's line and column, whatever comes before
    the frontmatter (blank lines, a BOM) and before the bad line inside it."""
    fm, needle, reason = FRONTMATTER_ERRORS[case]
    text = lead + "---\n" + after + fm + "---\nbody\n"
    if crlf:
        text = text.replace("\n", "\r\n")
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
    try:
        split_frontmatter(decode(data))
    except ProblemError as exc:
        p = exc.problem
    else:
        pytest.fail(f"{case} loaded")
    want_line, want_col = _file_position(data.decode("utf-8-sig"), needle)  # columns count after a BOM
    if case == "nesting":
        assert p.line == want_line and p.reason == reason  # libyaml marks the level that is too deep
    elif case == "syntax":
        assert p.line == want_line and p.reason == reason
    else:
        assert (p.reason, p.line, p.column) == (reason, want_line, want_col)
    assert f"line {p.line}" in p.message


# --- bounded, escaped human output -------------------------------------------------------------------


def test_run_summary_bounds_the_unknown_keys_it_prints() -> None:
    keys = [f"key_{i:06d}" for i in range(100_003)]
    summary = {
        "run_id": "r",
        "files": dict.fromkeys(("seen", "loaded", "rejected", "duplicate", "new", "changed", "unchanged"), 0)
        | {"deleted": 0, "parsed": 0},
        "rows": {},
        "new_unknown_keys": keys,
        "pipeline_seconds": 1.0,
    }
    text = format_summary(summary)
    (line,) = [x for x in text.splitlines() if "new unknown keys" in x]
    assert "key_000000" in line and "key_100002" not in line and "(+99,983 more)" in line
    assert len(line) < 1000
    (md_line,) = [x for x in summary_markdown(summary | {"seconds": {}}).splitlines() if "New frontmatter" in x]
    assert "(+99,983 more)" in md_line and len(md_line) < 1000


def test_printable_escapes_what_would_drive_a_terminal() -> None:
    assert printable("a\x1b[31mb\nc\u202ed.md") == "a\\x1b[31mb\\x0ac\\u202ed.md"
    assert printable("plain é ☃.md") == "plain é ☃.md"


def test_validate_escapes_names_in_text_and_keeps_them_in_json(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    evil = "evil\x1b[2J\nok      forged.md"
    (seeds / evil).write_text("no frontmatter", encoding="utf-8")
    text = run_cli("validate", "--seeds", str(seeds), check=False)
    assert text.returncode == 1
    assert "\x1b" not in text.stdout
    assert [x for x in text.stdout.splitlines() if x.startswith("ok ")] == []  # the newline did not forge a line
    assert "evil\\x1b[2J\\x0aok      forged.md" in text.stdout
    js = run_cli("validate", "--seeds", str(seeds), "--format", "json", check=False)
    assert [e["path"] for e in json.loads(js.stdout)] == [evil]  # exact
    assert "\x1b" not in format_report([{"path": evil, "ok": True}])


# --- the CLI across runs ---------------------------------------------------------------------------------


def pipeline_run(seeds: Path, warehouse: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--seeds", str(seeds), "--warehouse", str(warehouse),
         "--orchestrator", "none", "--quiet", "--format", "json", "--workers", "1", "--max-file-bytes", str(CAP)],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def manifest(warehouse: Path) -> dict[str, dict[str, Any]]:
    import duckdb

    con = duckdb.connect(str(warehouse / "catalog.duckdb"), read_only=True)
    try:
        cur = con.execute("SELECT * FROM source_files")
        cols = [d[0] for d in cur.description]
        return {r[0]: dict(zip(cols, r, strict=True)) for r in cur.fetchall()}
    finally:
        con.close()


def test_far_future_mtime_loads_and_validates(tmp_path: Path) -> None:
    seeds, warehouse = tmp_path / "seeds", tmp_path / "wh"
    seeds.mkdir()
    (seeds / "future.md").write_text(doc("https://t.example/future"), encoding="utf-8")
    os.utime(seeds / "future.md", ns=(0, FAR_FUTURE_NS))
    for attempt in ("first", "second"):
        proc = pipeline_run(seeds, warehouse)
        assert proc.returncode == 0, f"{attempt}: {proc.stderr}"
        row = manifest(warehouse)["future.md"]
        assert (row["status"], row["mtime_ns"]) == ("loaded", None), attempt
    assert json.loads(proc.stdout)["files"]["unchanged"] == 1  # read again (unknown time), same bytes
    assert run_cli("validate", "--seeds", str(seeds), check=False).returncode == 0


@pytest.mark.parametrize("kind", ["fifo", "link_outside", "socket"])
def test_a_path_refused_at_discovery_is_read_once_it_is_a_regular_file(kind: str, tmp_path: Path) -> None:
    seeds, warehouse, outside = tmp_path / "seeds", tmp_path / "wh", tmp_path / "outside.md"
    seeds.mkdir()
    outside.write_text(doc("https://r.example/outside"), encoding="utf-8")
    path = seeds / "x.md"
    with bound_socket() as (_, sock_path):
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "link_outside":
            path.symlink_to(outside)
        else:
            os.rename(sock_path, path)
        first = pipeline_run(seeds, warehouse)
        assert first.returncode == 0, first.stderr
        assert manifest(warehouse)["x.md"]["status"] == "rejected"
        path.unlink()
    path.write_text(doc("https://r.example/x"), encoding="utf-8")
    second = pipeline_run(seeds, warehouse)
    assert second.returncode == 0, second.stdout + second.stderr  # was 3: the row was stuck
    row = manifest(warehouse)["x.md"]
    assert (row["status"], row["size"]) == ("loaded", path.stat().st_size)


# --- the state-transition property -----------------------------------------------------------------------

# Shown names: b'x\xff.md' (not UTF-8), b'x\\xff.md' (a real backslash: once the same shown name),
# and a name with an escape character and a newline.
PATHS = ("a.md", "sub/b.md", "x\\xff.md", "x\\\\xff.md", "e\x1b[1m\nl.md")
CAN_MKNOD = os.geteuid() == 0
STATES = [
    "regular",
    "regular_edited",
    "empty",
    "huge",
    "broken",
    "fifo",
    "socket",
    *(["device"] if CAN_MKNOD else []),
    "link_inside",
    "link_outside",
    "link_loop",
    "folder",
    "deleted",
    "future_mtime",
    # "unreadable" via chmod 000 is left out: these tests run as root, whom chmod does not stop
    # (the EACCES path is the same per-file except clause as the ENOENT race tested above).
]


def place(seeds: Path, outside: Path, rel: str, state: str, holder: list[Any]) -> None:
    """Make the path ``rel`` (shown) be in ``state``, whatever it was."""
    path = Path(os.fsdecode(os.path.join(os.fsencode(seeds), os.fsencode(raw_name(rel)))))
    if path.is_symlink() or path.exists() or path.is_fifo() or path.is_socket():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    url = f"https://state.example/{abs(hash(rel))}"
    if state in ("regular", "future_mtime"):
        path.write_text(doc(url), encoding="utf-8")
        if state == "future_mtime":
            os.utime(path, ns=(0, FAR_FUTURE_NS))
    elif state == "regular_edited":
        path.write_text(doc(url, "Edited"), encoding="utf-8")
    elif state == "empty":
        path.write_bytes(b"")
    elif state == "huge":
        path.write_text(doc(url) + "x" * CAP, encoding="utf-8")
    elif state == "broken":
        path.write_text("---\ntitle: [\n---\n", encoding="utf-8")
    elif state == "fifo":
        os.mkfifo(path)
    elif state == "socket":
        sock = bound_socket()
        _, sock_path = sock.__enter__()
        holder.append(sock)
        os.rename(sock_path, path)
    elif state == "device":
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # like /dev/null
    elif state == "link_inside":
        store = seeds / ".store"
        store.mkdir(exist_ok=True)
        (store / f"{abs(hash(rel))}.md").write_text(doc(url + "/linked"), encoding="utf-8")
        path.symlink_to(store / f"{abs(hash(rel))}.md")
    elif state == "link_outside":
        path.symlink_to(outside)
    elif state == "link_loop":
        path.symlink_to(path)
    elif state == "folder":
        path.mkdir()
        (path / "inner.txt").write_text(doc(url + "/inner"), encoding="utf-8")
    else:
        assert state == "deleted"


def disk_paths(seeds: Path) -> set[str]:
    """Every matching non-folder entry on disk, as shown names, found without pipeline.discover."""
    out = set()
    for folder, dirs, files in os.walk(os.fsencode(seeds)):
        dirs[:] = [d for d in dirs if not d.startswith(b".")]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            rel = os.path.relpath(os.path.join(folder, name), os.fsencode(seeds))
            if not name.startswith(b".") and any(os.fsdecode(name).endswith(p[1:]) for p in PATTERNS):
                out.add(shown_name(os.fsdecode(rel)))
    return out


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(st.lists(st.sampled_from(STATES), min_size=len(PATHS), max_size=len(PATHS)), min_size=2, max_size=3)
)
def test_random_state_sequences_always_converge(
    steps: list[list[str]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """After every run: exit 0, every path on disk loaded xor rejected, nothing lost, and the state
    equals a fresh load of the same folder (run columns aside)."""
    root = tmp_path_factory.mktemp("states")
    seeds, warehouse, outside = root / "seeds", root / "wh", root / "outside.md"
    seeds.mkdir()
    outside.write_text(doc("https://state.example/outside"), encoding="utf-8")
    holders: list[Any] = []
    try:
        for n, states in enumerate(steps):
            for rel, state in zip(PATHS, states, strict=True):
                place(seeds, outside, rel, state, holders)
            proc = pipeline_run(seeds, warehouse)
            assert proc.returncode == 0, f"step {n} {states}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            m = manifest(warehouse)
            assert set(m) == disk_paths(seeds), f"step {n} {states}"
            assert all(r["status"] in ("loaded", "rejected", "duplicate") for r in m.values())
            got = export_tables(warehouse)
            rejected = {r[0] for r in got["rejects"]}
            assert rejected == {p for p, r in m.items() if r["status"] != "loaded"}
            assert len(got["articles"]) == sum(r["status"] == "loaded" for r in m.values())
            fresh = root / f"fresh{n}"
            assert pipeline_run(seeds, fresh).returncode == 0
            assert without_run_columns(got) == without_run_columns(export_tables(fresh)), f"step {n} {states}"
    finally:
        for h in holders:
            h.__exit__()
        shutil.rmtree(root, ignore_errors=True)


def test_found_is_a_plain_tuple() -> None:
    """Found stays a NamedTuple: discovery holds millions of them before compacting into Arrow."""
    assert Found("a", 1, None)._fields[:3] == ("rel", "size", "mtime_ns")


# The read itself: ``os.read`` sized by ``fstat``, then on to the end of the file or past the cap. A pipe
# stands in for a file that grows after the ``fstat`` (and for a file system that returns short reads):
# each write is a separate chunk, so every path through the loop is taken.
@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=64), max_size=8),
    first=st.integers(min_value=1, max_value=300),
    limit=st.integers(min_value=1, max_value=300),
)
def test_a_read_returns_the_whole_file_up_to_the_limit(chunks: list[bytes], first: int, limit: int) -> None:
    from pipeline.storage.seeds import _read_to_end

    content = b"".join(chunks)
    r, w = os.pipe()
    try:
        for chunk in chunks:
            os.write(w, chunk)
        os.close(w)
        w = -1
        assert _read_to_end(r, min(first, limit), limit) == content[:limit]
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


@pytest.mark.parametrize(("size", "loaded"), [(0, True), (99, True), (100, True), (101, False)])
def test_a_file_at_the_cap_is_read_whole_and_one_byte_over_is_refused(tmp_path: Path, size: int, loaded: bool) -> None:
    from pipeline.storage import seeds
    from pipeline.storage.failures import TooLarge

    (tmp_path / "f.md").write_bytes(b"x" * size)
    real = seeds.real_path(str(tmp_path))
    if loaded:
        assert seeds.read_capped(real, "f.md", False, 100) == b"x" * size
    else:
        with pytest.raises(TooLarge):
            seeds.read_capped(real, "f.md", False, 100)
