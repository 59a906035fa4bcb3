r"""Find seed files: recursive, deterministic order, hidden entries skipped, no escape by links or keys.

Local disk: symlinked folders are never followed (no loops, no escape). A symlinked file
is read only when its target lies inside the seeds folder; otherwise it is reported, not
silently skipped, so the run's accounting still adds up. FIFOs and devices are reported
too: opening one could hang the run.

Object stores: keys are listed exactly as stored. Zero-byte ``folder/`` markers are
folders, not files; a key with an empty, '.' or '..' segment is reported, never read.

A folder (or prefix) that cannot be listed is reported as *unlisted*, never read as
"empty": the run keeps what it knew of the files under it, exactly as it was. Anything else
that goes wrong with one entry (a stat that fails with EACCES, ENOENT in a race, ELOOP,
ENAMETOOLONG) is that entry's reject row; only the seeds folder itself can fail a run.

Shown names (``source_path``): a local file name is bytes, and the shown form must be one
string per byte sequence, reversible (``raw_name``) and injective, so that two files never
share a row. It is backslash escaping: a backslash is shown as ``\\`` and each byte that is
not part of valid UTF-8 as ``\xNN`` (lowercase hex); every other character is itself. So a
valid UTF-8 name without a backslash is shown unchanged, ``b'x\xff.md'`` is ``x\xff.md`` and
``b'x\\xff.md'`` (a real backslash) is ``x\\xff.md``. Names that are not valid UTF-8 are still
refused (``bad_file_name``), under their shown name; names with a backslash load. Object keys
are text already and are shown exactly as stored.

Modification times are nanoseconds in an int64 column. A time that does not fit (past
2262-04-11 or before 1677-09-21, e.g. ``touch -d 2263-01-01``) is not clamped or wrapped:
it is stored as NULL, "unknown", and such a file is read and hashed by every run (an
unchanged hash keeps its rows as they are), because an unknown time cannot prove it unchanged.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from stat import S_ISREG
from typing import NamedTuple, Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import faults
from pipeline.read.problems import Problem
from pipeline.storage import seeds
from pipeline.storage.failures import transient
from pipeline.storage.location import Location, relpath_ok
from pipeline.storage.objects import ObjectPrefix

LIST_ATTEMPTS = 3  # a prefix listing is retried this many times before it counts as unlisted
LIST_THREADS = 16  # top-level prefixes listed concurrently on object stores
T = TypeVar("T")


class Found(NamedTuple):
    """A file to consider; a tuple because a folder may hold millions of them."""

    rel: str  # '/'-separated shown path relative to the seeds root (``shown_name``)
    size: int
    mtime_ns: int | None  # None: the time does not fit in int64 nanoseconds (see the module docstring)
    target: str | None = None  # resolved path when the entry is a symlink (inside the seeds folder)
    etag: str | None = None  # object stores: the listed ETag


@dataclass(frozen=True)
class Refused:
    rel: str  # a file, or a folder/prefix ending in '/'
    problem: Problem


# Found files as Arrow columns (``_target`` and ``etag`` may be null).
FOUND_SCHEMA = pa.schema(
    [
        ("source_path", pa.string()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("_target", pa.string()),
        ("etag", pa.string()),
    ]
)
Columns = tuple[list[str], list[int], list[int]]
HELPER_PINGS = 2  # helper processes asked whether they have started
FOLDERS_PER_HELPER = 2  # folders in flight per started helper: one listed, one waiting
FOUND_CHUNK = 64 * 1024  # found files held as Python tuples before they are compacted into Arrow


@dataclass
class Discovery:
    """What a listing found. Found files are compacted into Arrow every ``FOUND_CHUNK`` files, so a
    folder of millions costs about its Arrow size (~100 bytes a file), not a Python object per file."""

    refused: list[Refused] = field(default_factory=list)  # files reported instead of read
    unlisted: list[Refused] = field(default_factory=list)  # folders that could not be listed ('sub/')
    _pending: list[Found] = field(default_factory=list)
    _batches: list[pa.RecordBatch] = field(default_factory=list)
    count: int = 0

    def add(self, found: Found) -> None:
        self.extend([found])

    def extend(self, found: list[Found]) -> None:
        self._pending += found
        self.count += len(found)
        if len(self._pending) >= FOUND_CHUNK:
            self._compact()

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """Found files already in Arrow (``FOUND_SCHEMA``)."""
        if batch.num_rows:
            self._batches.append(batch)
            self.count += batch.num_rows

    def _compact(self) -> None:
        if self._pending:
            columns = zip(*self._pending, strict=True)
            arrays = [pa.array(c, type=f.type) for c, f in zip(columns, FOUND_SCHEMA, strict=True)]
            self._batches.append(pa.RecordBatch.from_arrays(arrays, schema=FOUND_SCHEMA))
            self._pending = []

    def table(self, ordered: bool = True) -> pa.Table:
        """Every found file, sorted by path in byte order (``path_order``), or in no particular order
        (``ordered=False``: a plan joins them by path, and a sort of a million paths costs ~0.4 s)."""
        self._compact()
        found = pa.Table.from_batches(self._batches, schema=FOUND_SCHEMA)
        self._batches = []
        if found.num_rows < 2 or not ordered:
            return found
        # Arrow orders strings by their UTF-8 bytes, which is path_order.
        return found.take(pc.sort_indices(found, sort_keys=[("source_path", "ascending")]))

    def found(self) -> list[Found]:
        """The found files as tuples (small folders: validate, tests)."""
        return [Found(*row.values()) for row in self.table().to_pylist()]


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_ESCAPED = re.compile(r"\\(?:\\|x([0-9a-f]{2}))")


def utf8(name: str) -> bool:
    """True when the (surrogate-escaped) name from the OS is valid UTF-8."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def shown_name(name: str) -> str:
    """The one shown form of a local path (see the module docstring): injective and reversible.

    ``name`` is what the OS gave (undecodable bytes as surrogate escapes); the result is valid
    UTF-8 text that only ``raw_name`` turns back into the same bytes.
    """
    if "\\" not in name and (name.isascii() or utf8(name)):
        return name  # the usual case: nothing to escape
    out = []
    for ch in name:
        if ch == "\\":
            out.append("\\\\")
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def raw_name(shown: str) -> str:
    """The OS name (surrogate escapes for undecodable bytes) of a shown local path."""
    if "\\" not in shown:
        return shown
    return _ESCAPED.sub(lambda m: "\\" if m.group(1) is None else chr(0xDC00 + int(m.group(1), 16)), shown)


def mtime_or_none(st: os.stat_result) -> int | None:
    """The modification time in ns when it fits the int64 column; None (unknown) otherwise."""
    ns = st.st_mtime_ns
    return ns if INT64_MIN <= ns <= INT64_MAX else None


@functools.lru_cache(maxsize=16)
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    """One compiled regex for all patterns, case-sensitive like ``fnmatchcase``."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)).match


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return _matcher(patterns)(name) is not None


def discover(root: Location, patterns: tuple[str, ...], helpers: Executor | None = None) -> Discovery:
    """All matching files under ``root`` in byte order of their relative paths (``helpers``: see ``_discover_local``)."""
    if isinstance(root, ObjectPrefix):
        out = _discover_objects(root, patterns)
    else:
        out = _discover_local(root.root, patterns, helpers)
    out.refused.sort(key=lambda r: r.rel)
    out.unlisted.sort(key=lambda r: r.rel)
    return out


def _unlisted(rel: str, exc: BaseException) -> Refused:
    why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return Refused(
        rel,
        Problem(
            "unlisted_folder",
            f"cannot list this folder ({why}); the files it held are kept exactly as they were "
            "until it can be listed again",
        ),
    )


def _no_files() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=FOUND_SCHEMA)


@dataclass
class Listed:
    """One local folder's listing, made in any process (so it is plain, picklable data)."""

    prefix: str  # the folder, '/'-terminated, relative to the seeds root ('' for the root)
    files: pa.RecordBatch = field(default_factory=_no_files)  # plain regular files, as Arrow (one buffer to pickle)
    folders: list[tuple[str, str]] = field(default_factory=list)  # sub-folders: (prefix, OS path)
    found: list[Found] = field(default_factory=list)  # odd entries that load (links inside the root)
    refused: list[Refused] = field(default_factory=list)
    error: OSError | None = None  # the folder could not be listed


def list_folder(real_root: str, prefix: str, folder: str, patterns: tuple[str, ...]) -> Listed:
    """One folder, not recursive: what it holds, each entry decided.

    The plain files (regular, a UTF-8 name without a backslash, a time that fits) are listed in C
    where it is built (``seeds.scan_plain``: no Python object per file, about 0.6x the time of the loop
    below at 100k files); every other entry is decided here, exactly as the Python loop decides it.
    """
    if seeds.scan_plain is not None and _plain(prefix):
        try:
            return _list_folder_c(real_root, prefix, folder, patterns)
        except OverflowError:
            pass  # names beyond one Arrow string array (2 GiB in one folder): the loop below has no limit
    return _list_folder_py(real_root, prefix, folder, patterns)


def _plain(text: str) -> bool:
    """Shown as it is: valid UTF-8 without a backslash (see ``shown_name``)."""
    return "\\" not in text and (text.isascii() or utf8(text))


@functools.lru_cache(maxsize=16)
def suffixes(patterns: tuple[str, ...]) -> tuple[bytes, ...] | None:
    """The patterns as name endings when each is '*' and literal text (``fnmatchcase('*X', name)`` is
    ``name.endswith(X)`` when X holds none of ``*?[``), else None (names are matched one by one)."""
    out = []
    for pattern in patterns:
        if not pattern.startswith("*") or any(c in pattern[1:] for c in "*?["):
            return None
        try:
            out.append(pattern[1:].encode("utf-8"))
        except UnicodeEncodeError:
            return None
    return tuple(out)


def _list_folder_c(real_root: str, prefix: str, folder: str, patterns: tuple[str, ...]) -> Listed:
    scan_plain = seeds.scan_plain
    assert scan_plain is not None
    ends = suffixes(patterns)
    raw_folder, raw_prefix = os.fsencode(folder), prefix.encode("utf-8")

    def listing() -> tuple[int, bytes, bytes, bytes, bytes, list[bytes], list[bytes]]:
        faults.list_error(prefix)
        return scan_plain(raw_folder, raw_prefix, ends)

    try:
        count, offsets, data, sizes, mtimes, folders, odd = _retry(listing)
    except OSError as exc:
        return Listed(prefix, error=exc)
    paths = pa.Array.from_buffers(pa.string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    arrays = [
        paths,
        pa.Array.from_buffers(pa.int64(), count, [None, pa.py_buffer(sizes)]),
        pa.Array.from_buffers(pa.int64(), count, [None, pa.py_buffer(mtimes)]),
        pa.nulls(count, pa.string()),
        pa.nulls(count, pa.string()),
    ]
    files = pa.RecordBatch.from_arrays(arrays, schema=FOUND_SCHEMA)
    match = _matcher(patterns)
    if ends is None and count:  # the C side could not match these patterns: match each name here
        names = pc.utf8_slice_codeunits(paths, len(prefix))  # prefix: code units = characters
        files = files.filter(pa.array([match(n) is not None for n in names.to_pylist()], pa.bool_()))
    out = Listed(prefix, files)
    for raw in folders:
        name = os.fsdecode(raw)
        out.folders.append((f"{prefix}{name}/", os.path.join(folder, name)))
    for raw in odd:
        name = os.fsdecode(raw)
        if match(name) is None:
            continue
        item = _refusing_errors(_Named(os.path.join(folder, name)), prefix + name, real_root)
        if isinstance(item, Found):
            out.found.append(item)
        else:
            out.refused.append(item)
    return out


class _Entry(Protocol):
    """What ``_classify`` asks of a folder entry (an ``os.DirEntry``, or a ``_Named``)."""

    @property
    def path(self) -> str: ...

    def is_symlink(self) -> bool: ...

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result: ...


class _Named:
    """An entry the C listing handed back by name: what ``_classify`` asks of it, from ``lstat``."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def is_symlink(self) -> bool:
        try:
            return stat.S_ISLNK(seeds.lstat(self.path).st_mode)
        except OSError:
            return False  # as for an entry whose type was known: the stat that follows reports it

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        return seeds.stat_target(self.path) if follow_symlinks else seeds.lstat(self.path)


def _list_folder_py(real_root: str, prefix: str, folder: str, patterns: tuple[str, ...]) -> Listed:
    """``list_folder`` without the C listing."""

    def listing() -> list[os.DirEntry[str]]:
        faults.list_error(prefix)
        return seeds.scan(folder)

    try:
        entries = _retry(listing)
    except OSError as exc:
        return Listed(prefix, error=exc)
    (paths, sizes, mtimes), folders, odd = _scan(entries, prefix, _matcher(patterns))
    nulls = pa.nulls(len(paths), pa.string())
    arrays = [pa.array(paths, pa.string()), pa.array(sizes, pa.int64()), pa.array(mtimes, pa.int64()), nulls, nulls]
    out = Listed(prefix, pa.RecordBatch.from_arrays(arrays, schema=FOUND_SCHEMA), folders)
    for entry, rel in odd:
        item = _refusing_errors(entry, rel, real_root)
        if isinstance(item, Found):
            out.found.append(item)
        else:
            out.refused.append(item)
    return out


def _discover_local(root: str, patterns: tuple[str, ...], helpers: Executor | None = None) -> Discovery:
    """Walk the seeds folder. With ``helpers`` (processes on this machine), folders are listed by
    them and by this process at once: listing is one ``stat`` per file and Python-bound, so on a
    million files a single core spends seconds on it."""
    real_root = seeds.real_path(root)
    out = Discovery()
    todo = [("", real_root)]
    running: dict[Future[Listed], tuple[str, str]] = {}

    def take(listed: Listed) -> None:
        if listed.error is not None:
            if not listed.prefix:
                raise listed.error  # the seeds folder itself: the run fails (and is retried), nothing is deleted
            out.unlisted.append(_unlisted(shown_name(listed.prefix), listed.error))
            return
        out.add_batch(listed.files)
        for item in listed.found:
            out.add(item)
        out.refused += listed.refused
        todo.extend(listed.folders)

    # A helper gets folders once it has answered a ping: until then (a process start takes ~0.2 s)
    # a folder handed to it would wait while this process could have listed it. The pings are sent
    # from a thread, because sending the first one starts the processes, and this process lists
    # meanwhile instead of waiting for the fork server.
    pings: list[Future[int]] = []
    starter = _start_helpers(helpers, pings) if helpers is not None else None
    try:
        while todo or running:
            ready = sum(p.done() and not p.exception() for p in list(pings))
            helpers = _list_some(real_root, patterns, helpers, todo, running, ready, take)
    finally:
        if starter is not None:
            starter.join()
    return out


def _start_helpers(helpers: Executor, pings: list[Future[int]]) -> threading.Thread:
    """Ping the helpers from a thread (appending to PINGS); a broken pool leaves PINGS short, and the
    folders handed to it come back to the lister (``BrokenProcessPool`` below)."""

    def ping() -> None:
        for _ in range(HELPER_PINGS):
            try:
                pings.append(helpers.submit(os.getpid))
            except (BrokenProcessPool, RuntimeError):  # broken, or shut down
                return

    starter = threading.Thread(target=ping, name="pipeline-helper-start", daemon=True)
    starter.start()
    return starter


def _list_some(
    real_root: str,
    patterns: tuple[str, ...],
    helpers: Executor | None,
    todo: list[tuple[str, str]],
    running: dict[Future[Listed], tuple[str, str]],
    ready: int,
    take: Callable[[Listed], None],
) -> Executor | None:
    """One step of the listing: hand folders to READY helpers, list one here (or wait for a helper),
    take what is done. Returns the helpers, or None once they are gone."""
    while helpers is not None and len(todo) > 1 and len(running) < FOLDERS_PER_HELPER * ready:
        folder = todo.pop()
        try:
            running[helpers.submit(list_folder, real_root, *folder, patterns)] = folder
        except BrokenProcessPool:
            todo.append(folder)
            helpers = None  # the helpers are gone: this process lists the rest
    if todo:
        take(list_folder(real_root, *todo.pop(), patterns))
        done = [f for f in running if f.done()]
    else:
        done = list(wait(running, return_when=FIRST_COMPLETED).done)
    for fut in done:
        folder = running.pop(fut)
        try:
            listed = fut.result()
        except BrokenProcessPool:
            listed, helpers = list_folder(real_root, *folder, patterns), None
        take(listed)
    return helpers


def _scan(
    entries: list[os.DirEntry[str]], prefix: str, match: Callable[[str], re.Match[str] | None]
) -> tuple[Columns, list[tuple[str, str]], list[tuple[os.DirEntry[str], str]]]:
    """One folder's entries: plain regular files as columns (path, size, mtime), sub-folders to
    walk, and the odd entries (links, odd names, failed stats, times beyond int64) that
    ``_classify`` decides. The plain case is inlined: it runs once per file of a million-file folder."""
    paths: list[str] = []
    sizes: list[int] = []
    mtimes: list[int] = []
    folders: list[tuple[str, str]] = []
    odd: list[tuple[os.DirEntry[str], str]] = []
    plain_prefix = "\\" not in prefix and (prefix.isascii() or utf8(prefix))
    for entry in entries:
        name = entry.name
        if name[0] == ".":
            continue
        rel = prefix + name  # the OS name; shown_name() of it is what rows hold
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            folders.append((f"{rel}/", entry.path))
            continue
        if match(name) is None:
            continue
        if plain_prefix and "\\" not in name and (name.isascii() or utf8(name)):
            try:
                st = entry.stat(follow_symlinks=False)  # a symbolic link is not S_ISREG: _classify takes it
            except OSError:
                st = None
            if st is not None and S_ISREG(st.st_mode) and INT64_MIN <= st.st_mtime_ns <= INT64_MAX:
                paths.append(rel)
                sizes.append(st.st_size)
                mtimes.append(st.st_mtime_ns)
                continue
        odd.append((entry, rel))
    return (paths, sizes, mtimes), folders, odd


def _refusing_errors(entry: _Entry, rel: str, real_root: str) -> Found | Refused:
    """``_classify``, with any OS error about this one entry turned into its reject row."""
    try:
        return _classify(entry, rel, real_root)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        return Refused(shown_name(rel), Problem("unreadable", f"cannot inspect file: {why}"))


def _classify(entry: _Entry, os_rel: str, real_root: str) -> Found | Refused:
    rel = shown_name(os_rel)
    if not utf8(os_rel):
        return Refused(rel, Problem("bad_file_name", "file name is not valid UTF-8; rename the file"))
    path, target = entry.path, None
    if entry.is_symlink():
        target = seeds.link_inside(path, real_root)
        if target is None:
            return Refused(
                rel,
                Problem("link_outside_seeds", "symbolic link points outside the seeds folder; not followed"),
            )
        path = target
    try:
        st = entry.stat(follow_symlinks=False) if target is None else seeds.stat_target(path)
    except OSError as exc:
        return Refused(rel, Problem("unreadable", f"cannot stat file: {exc.strerror}"))
    if not stat.S_ISREG(st.st_mode):
        return Refused(rel, Problem("not_regular_file", "not a regular file (FIFO, device, socket or folder)"))
    # The target is a flag for the reader (it resolves the link again, with care): shown, as text.
    return Found(rel, st.st_size, mtime_or_none(st), None if target is None else shown_name(target))


def _retry(fn: Callable[[], T]) -> T:
    """Transient listing errors (throttling, a dropped connection) get a few more tries."""
    for attempt in range(LIST_ATTEMPTS):
        try:
            return fn()
        except OSError as exc:
            if not transient(exc) or attempt == LIST_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def _discover_objects(root: ObjectPrefix, patterns: tuple[str, ...]) -> Discovery:
    """One delimited listing of the top level, then a flat listing of each top-level prefix, concurrently.

    A failing top-level prefix is reported as unlisted and the others still load; a failing
    top-level listing fails the run (after retries) rather than looking like deletions.
    """
    base = root.key("")  # "prefix/" or "" for a whole bucket
    out = Discovery()

    def top() -> list[tuple[str, int, int, str | None]]:
        faults.list_error("")
        return list(root.list_keys(base, delimiter="/"))

    prefixes: list[str] = []
    for key, size, mtime, etag in _retry(top):
        if size < 0:
            prefixes.append(key)
        else:
            _add_object(out, key[len(base) :], size, mtime, etag, patterns)

    def flat(prefix: str) -> list[tuple[str, int, int, str | None]]:
        faults.list_error(prefix[len(base) :])
        return list(root.list_keys(prefix))

    def listed(prefix: str) -> list[tuple[str, int, int, str | None]] | BaseException:
        try:
            return _retry(lambda: flat(prefix))
        except OSError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=LIST_THREADS) as pool:
        for prefix, result in zip(prefixes, pool.map(listed, prefixes), strict=True):
            rel_prefix = prefix[len(base) :]
            if isinstance(result, BaseException):
                out.unlisted.append(_unlisted(rel_prefix, result))
                continue
            for key, size, mtime, etag in result:
                _add_object(out, key[len(base) :], size, mtime, etag, patterns)
    return out


def _add_object(out: Discovery, rel: str, size: int, mtime: int, etag: str | None, patterns: tuple[str, ...]) -> None:
    if rel.endswith("/"):
        return  # a console's zero-byte "folder" marker
    name = rel.rsplit("/", 1)[-1]
    if not _matches(name, patterns):
        return
    if not relpath_ok(rel):
        out.refused.append(
            Refused(
                rel,
                Problem(
                    "unsafe_key",
                    "object key has an empty, '.' or '..' path segment; it is not read, because other tools "
                    "would resolve it to a different name (possibly outside the seeds prefix); rename the object",
                ),
            )
        )
        return
    if any(part.startswith(".") for part in rel.split("/")):
        return  # hidden, as on local disk
    out.add(Found(rel, size, mtime, None, etag))
