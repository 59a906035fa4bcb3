"""A real S3-compatible server for tests: `moto_server` on a free loopback port, in memory.

Explicit test credentials and `AWS_EC2_METADATA_DISABLED=true`, so nothing ever looks for
real AWS. The server's access log (one line per request) is kept, so a test can count the
GETs a run made. Started once per test session (see conftest's `s3` fixture).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from .prefect_server import free_port, stop_group

MOTO = str(Path(sys.executable).with_name("moto_server"))
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
REQUEST = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP')


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkdtemp(prefix="moto-")) / "access.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._buckets = 0

    def env(self, **extra: str) -> dict[str, str]:
        """Variables a client process needs to talk to this server (and only to it)."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint, **extra}

    def start(self, timeout: float = 30.0) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [MOTO, "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start:\n{self.log_path.read_text()[-2000:]}") from None
                time.sleep(0.05)

    @contextlib.contextmanager
    def serving(self) -> Any:
        """Started, with its endpoint and test keys in this process's environment (s3fs and Location read
        them there); stopped and the environment put back as it was afterwards."""
        self.start()
        saved = {k: os.environ.get(k) for k in self.env()}
        os.environ.update(self.env())
        try:
            yield self
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            self.stop()

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def client(self) -> Any:
        """A fresh s3fs client for the test process."""
        import s3fs

        return s3fs.S3FileSystem(
            key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            endpoint_url=self.endpoint,
            client_kwargs={"region_name": CREDENTIALS["AWS_REGION"]},
            skip_instance_cache=True,
        )

    def new_bucket(self, prefix: str = "bkt") -> str:
        """A fresh, empty bucket (each test gets its own)."""
        self._buckets += 1
        name = f"{prefix}-{self._buckets:04d}-{os.getpid()}"
        self.client().call_s3("create_bucket", Bucket=name)
        return name

    def upload_folder(self, folder: Path, url: str) -> int:
        """Every file under ``folder`` to ``s3://bucket/prefix/<relative path>``; returns the count."""
        fs = self.client()
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        files = [p for p in sorted(folder.rglob("*")) if p.is_file()]

        def one(path: Path) -> None:
            rel = path.relative_to(folder).as_posix()
            put(fs, bucket, f"{prefix}/{rel}" if prefix else rel, path.read_bytes())

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(one, files))
        return len(files)

    def log_mark(self) -> int:
        """A position in the access log; `requests_since` counts what came after it."""
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.stat().st_size
        return 0

    def requests_since(self, mark: int) -> list[tuple[str, str]]:
        """(method, path) of every request logged after ``mark``."""
        with open(self.log_path, "rb") as fh:
            fh.seek(mark)
            text = fh.read().decode("utf-8", "replace")
        return REQUEST.findall(text)


def put(fs: Any, bucket: str, key: str, data: bytes) -> None:
    """One object, with its key exactly as given (no path normalisation)."""
    fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data)
