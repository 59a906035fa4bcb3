"""A fault-injecting HTTP proxy in front of the test S3 server (moto), on loopback.

Clients (the pipeline in its own process) use the proxy's address as ``AWS_ENDPOINT_URL``;
every request goes on to the real server unless a fault says otherwise. The faults are the
ones object storage really shows:

- ``slowdown``: HTTP 503 with S3's ``SlowDown`` XML error (throttling), not forwarded;
- ``error``: HTTP 500 ``InternalError``, not forwarded;
- ``reset``: the connection is reset before the request is forwarded;
- ``delay``: the request is forwarded after ``seconds``;
- ``lost_reply``: the request is forwarded and applied by the server, then the client's
  connection is reset instead of the reply (a PUT took effect, the client does not know);
- ``cut_body``: the reply's headers promise the whole body, half of it is sent, then reset;
- ``hold``: the request waits (already sent by the client, not yet applied) until the
  rule's ``release`` event is set: a request held in flight.

Faults are targeted (the ``nth`` request matching a method and a key pattern, ``times`` in a
row) or random (each request at ``rate``, from a seeded generator). Every request is logged
with the fault it got, so a test can show that its fault really happened.
"""

from __future__ import annotations

import random
import re
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO
from urllib.parse import unquote, urlsplit

KINDS = ("slowdown", "error", "reset", "delay", "lost_reply", "cut_body", "hold")
RANDOM_KINDS = ("slowdown", "error", "reset", "lost_reply", "cut_body")

_S3_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
    "<RequestId>fault-proxy</RequestId></Error>"
)


@dataclass
class Rule:
    """A targeted fault: requests ``nth`` .. ``nth + times - 1`` that match ``method`` and ``key`` get ``kind``."""

    kind: str
    method: str = ""  # "" matches every method
    key: str = ""  # regex searched in "bucket/key" (unquoted); "" matches everything
    nth: int = 1
    times: int = 1
    seconds: float = 0.0  # delay
    release: threading.Event = field(default_factory=threading.Event)  # hold: set to let the request go
    seen: int = 0  # matching requests so far
    fired: int = 0  # faults applied so far
    arrived: threading.Event = field(default_factory=threading.Event)  # set when the fault is first applied

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault {self.kind!r}")

    def matches(self, method: str, key: str) -> bool:
        return (not self.method or self.method == method) and (not self.key or re.search(self.key, key) is not None)


@dataclass(frozen=True)
class Seen:
    """One request through the proxy and what was done to it ("" when forwarded untouched)."""

    method: str
    key: str
    query: str
    fault: str


@dataclass
class RandomFaults:
    """Each matching request gets one of ``kinds`` with probability ``rate`` (seeded: a failure can be replayed)."""

    rate: float
    seed: int
    kinds: tuple[str, ...] = RANDOM_KINDS
    key: str = ""  # only requests whose "bucket/key" matches this regex
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def pick(self, key: str) -> str:
        if self.key and re.search(self.key, key) is None:
            return ""
        return self.rng.choice(self.kinds) if self.rng.random() < self.rate else ""


class FaultProxy:
    """The proxy: ``start()``, point clients at ``endpoint``, add rules or random faults, ``stop()``."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rules: list[Rule] = []
        self.random: RandomFaults | None = None
        self.log: list[Seen] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        for rule in self.rules:
            rule.release.set()  # never leave a held request (and its client) hanging
        self._server.shutdown()
        self._server.server_close()

    # --- configuring faults --------------------------------------------------------------------
    def add(
        self, kind: str, method: str = "", key: str = "", nth: int = 1, times: int = 1, seconds: float = 0.0
    ) -> Rule:
        """A targeted fault (see ``Rule``); returns it, so a test can wait for it or release it."""
        rule = Rule(kind, method, key, nth, times, seconds)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """No faults from now on (held requests are let go)."""
        with self._lock:
            for rule in self.rules:
                rule.release.set()
            self.rules = []
            self.random = None

    def faults(self, kind: str | None = None) -> list[Seen]:
        """Requests that got a fault (of ``kind``)."""
        with self._lock:
            return [s for s in self.log if s.fault and (kind is None or s.fault == kind)]

    # --- serving ---------------------------------------------------------------------------------
    def _decide(self, method: str, key: str) -> tuple[str, Rule | None]:
        with self._lock:
            chosen: Rule | None = None
            for rule in self.rules:  # every matching rule counts the request; the first that is due fires
                if rule.matches(method, key):
                    rule.seen += 1
                    if chosen is None and rule.nth <= rule.seen < rule.nth + rule.times:
                        chosen = rule
            if chosen is not None:
                chosen.fired += 1
                return chosen.kind, chosen
            if self.random is not None:
                return self.random.pick(key), None
        return "", None

    def _serve(self, client: socket.socket) -> None:
        """Requests of one client connection, one after another (HTTP/1.1 keep-alive)."""
        reader = client.makefile("rb")
        try:
            while True:
                request = _read_request(reader, client)
                if request is None:
                    return
                method, target, head, body = request
                parts = urlsplit(target)
                key = unquote(parts.path.lstrip("/"))
                kind, rule = self._decide(method, key)
                with self._lock:
                    self.log.append(Seen(method, key, parts.query, kind))
                if rule is not None:
                    rule.arrived.set()
                if kind in ("slowdown", "error"):
                    code, status, message = (
                        ("SlowDown", "503 Slow Down", "Please reduce your request rate.")
                        if kind == "slowdown"
                        else ("InternalError", "500 Internal Server Error", "We encountered an internal error.")
                    )
                    xml = _S3_ERROR.format(code=code, message=message).encode()
                    client.sendall(
                        f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {len(xml)}\r\n"
                        "\r\n".encode()
                        + (b"" if method == "HEAD" else xml)
                    )
                    continue
                if kind == "reset":
                    _reset(client)
                    return
                if kind == "delay" and rule is not None:
                    time.sleep(rule.seconds)
                if kind == "hold" and rule is not None:
                    rule.release.wait()
                with socket.create_connection(self.upstream) as upstream, upstream.makefile("rb") as answer:
                    upstream.sendall(head + body)  # a new connection per request: the server may close its own
                    status_head, reply = _read_response(answer, method)
                if kind == "lost_reply":
                    _reset(client)
                    return
                if kind == "cut_body" and reply:
                    client.sendall(status_head + reply[: len(reply) // 2])
                    _reset(client)
                    return
                client.sendall(status_head + reply)
        except OSError:
            return
        finally:
            reader.close()


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a dropped connection looks to the client."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


def _headers(reader: IO[bytes]) -> tuple[list[bytes], dict[str, str]] | None:
    lines: list[bytes] = []
    fields: dict[str, str] = {}
    while True:
        line = reader.readline()
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            return lines, fields
        lines.append(line)
        name, _, value = line.decode("latin-1").partition(":")
        fields[name.strip().lower()] = value.strip()


def _read_body(reader: IO[bytes], fields: dict[str, str]) -> bytes:
    """A message body as sent (Content-Length or chunked, raw), so it can be forwarded byte for byte."""
    if "chunked" in fields.get("transfer-encoding", "").lower():
        out = b""
        while True:
            size_line = reader.readline()
            out += size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = reader.readline()
                    out += trailer
                    if trailer in (b"\r\n", b"\n", b""):
                        return out
            out += reader.read(size + 2)
    return reader.read(int(fields.get("content-length", "0") or 0))


def _read_request(reader: IO[bytes], client: socket.socket) -> tuple[str, str, bytes, bytes] | None:
    """(method, target, raw head, raw body) of the next request, or None when the client hung up."""
    first = reader.readline()
    if not first.strip():
        return None
    parsed = _headers(reader)
    if parsed is None:
        return None
    lines, fields = parsed
    method, target, _ = first.decode("latin-1").split(" ", 2)
    if fields.get("expect", "").lower() == "100-continue":
        client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # the server never sees Expect (it is not signed)
        lines = [ln for ln in lines if not ln.lower().startswith(b"expect:")]
    body = _read_body(reader, fields)
    return method, target, first + b"".join(lines) + b"\r\n", body


def _read_response(reader: IO[bytes], method: str) -> tuple[bytes, bytes]:
    """(status line + headers, body) of the server's reply; a chunked body is re-framed with Content-Length."""
    while True:
        first = reader.readline()
        parsed = _headers(reader)
        if parsed is None:
            raise ConnectionError("upstream closed")
        lines, fields = parsed
        if not first.startswith(b"HTTP/1.1 100"):
            break
    status = int(first.split()[1])
    if method == "HEAD" or status in (204, 304):
        return first + b"".join(lines) + b"\r\n", b""
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int(reader.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while reader.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += reader.read(size)
            reader.read(2)
        lines = [ln for ln in lines if not ln.lower().startswith(b"transfer-encoding:")]
        lines.append(f"Content-Length: {len(body)}\r\n".encode())
    else:
        body = reader.read(int(fields.get("content-length", "0") or 0))
    return first + b"".join(lines) + b"\r\n", body


@contextmanager
def running(upstream: str) -> Iterator[FaultProxy]:
    """A started proxy in front of ``upstream``, stopped afterwards."""
    proxy = FaultProxy(upstream).start()
    try:
        yield proxy
    finally:
        proxy.stop()
