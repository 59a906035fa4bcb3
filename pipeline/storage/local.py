"""A local folder as a ``Location``: the ``os`` fast paths (scandir, rename, hard links, fsync, flock)."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, ClassVar

from pipeline.storage.location import LOCAL, Entry, Fetched, Location

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from pipeline.storage.lease import WriterLock

LOCK = ".lock"  # the flock file of writer_lock, at the folder's top


@dataclass(frozen=True)
class LocalFolder(Location):
    """A folder on this machine (``root`` is absolute)."""

    protocol: ClassVar[str] = LOCAL
    slow_to_open: ClassVar[bool] = False

    @property
    def url(self) -> str:
        return self.root

    def join(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def child(self, rel: str) -> LocalFolder:
        return LocalFolder(os.path.join(self.root, rel), self.options_json)

    # --- reading --------------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes:
        with open(self.join(rel), "rb") as fh:
            return fh.read()

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.join(rel))

    def list_files(self, rel: str = "") -> list[Entry]:
        base = self.join(rel) if rel else self.root
        out = []
        for folder, _dirs, names in os.walk(base):
            for name in names:
                path = os.path.join(folder, name)
                try:
                    st = os.stat(path, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                out.append(Entry(os.path.relpath(path, self.root).replace(os.sep, "/"), st.st_size, st.st_mtime_ns))
        return out

    def list_names(self, rel: str) -> list[str]:
        try:
            return os.listdir(self.join(rel) if rel else self.root)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def fetch_objects(
        self, rels: list[str], max_bytes: int, etags: list[str | None] | None = None
    ) -> list[Fetched | BaseException]:
        """Each file's first ``max_bytes + 1`` bytes; a local file has no version tag."""
        out: list[Fetched | BaseException] = []
        for rel in rels:
            try:
                with open(self.join(rel), "rb") as fh:
                    out.append(Fetched(fh.read(max_bytes + 1), None))
            except OSError as exc:
                out.append(exc)
        return out

    def read_parquet(self, urls: list[str], columns: list[str] | None = None) -> pa.Table:
        import pyarrow.parquet as pq

        return pq.read_table(urls, columns=columns)

    def open_read(self, rel: str) -> Any:
        import pyarrow as pa

        return pa.OSFile(self.join(rel), "rb")

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        """DuckDB reads local paths itself."""

    def local_copy(self, rel: str, scratch: Location) -> str | None:
        path = self.join(rel)
        return path if os.path.exists(path) else None

    def delta_options(self) -> dict[str, str] | None:
        return None

    # --- writing --------------------------------------------------------------------------
    def makedirs(self, rel: str) -> None:
        os.makedirs(self.join(rel) if rel else self.root, exist_ok=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Written beside, synced, then renamed over ``rel``."""
        path = self.join(rel)
        os.replace(_synced_copy(path, data), path)

    def create_only(self, rel: str, data: bytes) -> bool:
        """A synced temporary file ``link``-ed into place: fails if the name exists; never seen partial."""
        path = self.join(rel)
        tmp = _synced_copy(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        fsync_dir(os.path.dirname(path))
        return True

    def open_write(self, rel: str) -> IO[bytes]:
        """Written in place: callers name files nobody reads until a commit names them."""
        path = self.join(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return open(path, "wb")

    def put_file(self, local_path: str, rel: str) -> None:
        target = self.join(rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.replace(local_path, target)
        except OSError:  # another file system: copy beside, then rename
            tmp = f"{target}.tmp-{os.getpid()}"
            shutil.copyfile(local_path, tmp)
            os.replace(tmp, target)
            os.unlink(local_path)
        fsync_dir(os.path.dirname(target))

    def delete(self, rels: list[str]) -> None:
        for rel in rels:
            path = self.join(rel)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def delete_tree(self, rel: str) -> None:
        shutil.rmtree(self.join(rel), ignore_errors=True)

    # --- links --------------------------------------------------------------------------------
    def link_tree(self, rel: str, folders: dict[str, dict[str, str]], scratch: Location) -> None:
        final = self.join(rel)
        if os.path.isdir(final):
            return
        tree = scratch.fresh_path(f"tree-{os.path.basename(final)}")
        shutil.rmtree(tree, ignore_errors=True)
        for folder_name, entries in folders.items():
            folder = os.path.join(tree, folder_name)
            os.makedirs(folder)
            for name, src in entries.items():
                _link_or_copy(self.join(src), os.path.join(folder, name))
            fsync_dir(folder)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.rename(tree, final)
        fsync_dir(os.path.dirname(final))

    def point_link(self, rel: str, target: str) -> None:
        link = self.join(rel)
        folder = os.path.dirname(link)
        stem = os.path.basename(link) + ".tmp"
        for name in os.listdir(folder):  # a killed run's half-made link
            if name.startswith(stem):
                os.unlink(os.path.join(folder, name))
        tmp = f"{link}.tmp-{os.getpid()}"
        os.symlink(target, tmp)
        os.replace(tmp, link)
        fsync_dir(folder)

    def link_target(self, rel: str) -> str | None:
        link = self.join(rel)
        if not os.path.islink(link):
            return None
        return os.path.basename(os.path.realpath(link))

    # --- one writer at a time -----------------------------------------------------------------
    def writer_lock(self, run_id: str, wait_seconds: float, lease_seconds: float) -> WriterLock:
        """flock on ``.lock``: the kernel releases it when the run dies, even by SIGKILL."""
        from pipeline.storage.lease import FileLock

        os.makedirs(self.root, exist_ok=True)
        return FileLock.acquire(self, self.join(LOCK), wait_seconds)

    # --- scratch ------------------------------------------------------------------------------
    def scratch(self) -> LocalFolder:
        """``scratch/`` inside this folder (same file system: renames from it are atomic)."""
        folder = self.child("scratch")
        folder.makedirs("")
        return folder

    def fresh_path(self, name: str) -> str:
        path = self.join(name)
        if os.path.lexists(path) and not os.path.isdir(path):
            os.unlink(path)
        return path


def _synced_copy(path: str, data: bytes) -> str:
    """``data`` in a new file beside ``path``, on disk (fsync) before it is renamed or linked into place."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return tmp


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def fsync_dir(path: str) -> None:
    """Make a rename or link in ``path`` durable (the folder's entry is on disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
