"""Object-storage client: s3fs (what the pipeline uses) against obstore (Rust object_store), on the S3 fixture.

    python -m bench.storage_clients [--objects 5000] [--size 4096] [--rounds 5] [--puts 1000] [--json PATH]

Starts the moto server from ``harness.s3_server`` on 127.0.0.1 and, for each client, measures:

- LIST of ``--objects`` keys under one prefix (paginated, 1,000 keys a page, with ETags);
- GET of those objects, 64 in flight, each with ``Range: bytes=0-N`` and ``If-Match`` (the listing's ETag),
  as a run fetches seeds. s3fs: ``Location.fetch_objects`` itself (async gather over ``fs._call_s3``,
  a semaphore of ``FETCH_CONCURRENCY``, retries); obstore: ``asyncio.gather`` over ``get_async`` with the
  same semaphore, ``options={"range": ..., "if_match": ...}``;
- PUT of ``--puts`` small objects, 64 in flight, plain and create-only (s3fs ``IfNoneMatch="*"``,
  obstore ``mode="create"``).

Rounds alternate the clients (A/B, then B/A) because the machine is shared; each figure is the median
of the rounds with min and max. The server's CPU (psutil) is reported too: moto is one Python process,
and when it is busy ~100% of a core during a measurement, the server is the ceiling, not the client.
The client's own CPU per 1,000 operations (``time.process_time``, all threads, Rust ones included)
says what each client costs the process whatever the server.

Then one pass of behaviour checks for both: a conditional replace (If-Match) and its 412 on a stale
ETag, a create-only conflict, If-Match on GET, conditional delete, a ranged GET past the end, an
empty object's ranged GET. obstore is optional (not a project dependency): without it only s3fs is
measured and the report says obstore is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from harness.s3_server import CREDENTIALS, MotoServer

CONCURRENCY = 64  # the pipeline's FETCH_CONCURRENCY; checked against it in main()
LIST_PREFIX = "list/"


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _obstore() -> Any | None:
    try:
        import obstore
    except ImportError:
        return None
    return obstore


# --- the two clients -------------------------------------------------------------------------------------------
class S3fsClient:
    """The pipeline's own path: ``Location`` over one s3fs client (raw aiobotocore calls)."""

    name = "s3fs"

    def __init__(self, bucket: str, put_bucket: str) -> None:
        from pipeline.storage.location import Location

        self.loc = Location.parse(f"s3://{bucket}")
        self.put_bucket = put_bucket
        self.fs = self.loc.fs()

    def _run(self, make: Callable[[], Any]) -> Any:
        from fsspec.asyn import sync

        return sync(self.fs.loop, make)

    def list(self, prefix: str) -> list[tuple[str, str | None]]:
        return [(key, etag) for key, _size, _mtime, etag in self.loc.list_keys(prefix)]

    def get_many(self, keys: list[str], etags: list[str | None], max_bytes: int) -> int:
        got = self.loc.fetch_objects(keys, max_bytes, etags)
        bad = [g for g in got if isinstance(g, BaseException)]
        if bad:
            raise RuntimeError(f"s3fs: {len(bad)} GETs failed, first: {bad[0]!r}")
        return sum(len(g.data) for g in got)  # type: ignore[union-attr]

    def put_many(self, keys: list[str], body: bytes, create: bool) -> int:
        extra = {"IfNoneMatch": "*"} if create else {}

        async def all_puts() -> int:
            gate = asyncio.Semaphore(CONCURRENCY)

            async def one(key: str) -> None:
                async with gate:
                    await self.fs._call_s3("put_object", Bucket=self.put_bucket, Key=key, Body=body, **extra)

            await asyncio.gather(*(one(k) for k in keys))
            return len(keys)

        return self._run(all_puts)  # type: ignore[no-any-return]

    # behaviour checks, one call each
    def call(self, method: str, **kwargs: Any) -> Any:
        async def one() -> Any:
            return await self.fs._call_s3(method, Bucket=self.put_bucket, **kwargs)

        return self._run(one)

    def checks(self) -> dict[str, str]:
        out: dict[str, str] = {}
        key = "checks/s3fs"
        first = self.call("put_object", Key=key, Body=b"version one")["ETag"]
        out["ETag on PUT / LIST / GET"] = _yes(
            bool(first)
            and any(o.get("ETag") for o in self.call("list_objects_v2", Prefix="checks/").get("Contents", []))
            and bool(self.call("get_object", Key=key)["ETag"])
        )
        body = self.call("get_object", Key=key, Range="bytes=0-3")["Body"]
        out["ranged GET with a byte limit"] = f'yes (`Range="bytes=0-3"` gave {len(self._read(body))} bytes)'
        body = self.call("get_object", Key=key, Range="bytes=0-99999")["Body"]
        out["range past the end"] = f"the whole object ({len(self._read(body))} bytes)"
        out["create-only conflict"] = _outcome(lambda: self.call("put_object", Key=key, Body=b"x", IfNoneMatch="*"))
        second = self.call("put_object", Key=key, Body=b"version two", IfMatch=first)["ETag"]
        out["replace with If-Match (current ETag)"] = "applied, new ETag returned" if second != first else "?"
        out["replace with If-Match (stale ETag)"] = _outcome(
            lambda: self.call("put_object", Key=key, Body=b"three", IfMatch=first)
        )
        out["GET with If-Match (stale ETag)"] = _outcome(lambda: self.call("get_object", Key=key, IfMatch=first))
        out["conditional delete (stale ETag)"] = _outcome(lambda: self.call("delete_object", Key=key, IfMatch=first))
        self.call("delete_object", Key=key, IfMatch=second)
        gone = _outcome(lambda: self.call("head_object", Key=key))
        out["conditional delete (current ETag)"] = "deleted" if "404" in gone or "NotFound" in gone else f"? {gone}"
        self.call("put_object", Key="checks/s3fs-empty", Body=b"")
        out["ranged GET of an empty object"] = _outcome(
            lambda: self.call("get_object", Key="checks/s3fs-empty", Range="bytes=0-10")
        )
        return out

    def _read(self, body: Any) -> bytes:
        async def read() -> bytes:
            async with body as stream:
                return await stream.read()  # type: ignore[no-any-return]

        return self._run(read)  # type: ignore[no-any-return]


class ObstoreClient:
    """obstore's S3Store, its async API (``get_async``, ``put_async``) under ``asyncio.gather``."""

    name = "obstore"

    def __init__(self, endpoint: str, bucket: str, put_bucket: str) -> None:
        import obstore
        from obstore.store import S3Store

        self.obs = obstore
        config = {
            "endpoint": endpoint,
            "region": CREDENTIALS["AWS_REGION"],
            "access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        }
        self.store = S3Store(bucket, client_options={"allow_http": True}, **config)  # type: ignore[arg-type]
        self.put_store = S3Store(put_bucket, client_options={"allow_http": True}, **config)  # type: ignore[arg-type]

    def list(self, prefix: str) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        for chunk in self.obs.list(self.store, prefix=prefix, chunk_size=1000):
            out.extend((meta["path"], meta["e_tag"]) for meta in chunk)
        return out

    def get_many(self, keys: list[str], etags: list[str | None], max_bytes: int) -> int:
        obs, store = self.obs, self.store

        async def all_gets() -> int:
            gate = asyncio.Semaphore(CONCURRENCY)

            async def one(key: str, etag: str | None) -> int:
                options: dict[str, Any] = {"range": (0, max_bytes + 1)}
                if etag:
                    options["if_match"] = etag
                async with gate:
                    got = await obs.get_async(store, key, options=options)  # type: ignore[arg-type]
                    data = await got.bytes_async()
                return len(data)

            sizes = await asyncio.gather(*(one(k, e) for k, e in zip(keys, etags, strict=True)))
            return sum(sizes)

        return asyncio.run(all_gets())

    def put_many(self, keys: list[str], body: bytes, create: bool) -> int:
        obs, store = self.obs, self.put_store
        mode = "create" if create else "overwrite"

        async def all_puts() -> int:
            gate = asyncio.Semaphore(CONCURRENCY)

            async def one(key: str) -> None:
                async with gate:
                    await obs.put_async(store, key, body, mode=mode)  # type: ignore[arg-type]

            await asyncio.gather(*(one(k) for k in keys))
            return len(keys)

        return asyncio.run(all_puts())

    def checks(self) -> dict[str, str]:
        obs, st = self.obs, self.put_store
        out: dict[str, str] = {}
        key = "checks/obstore"
        first = obs.put(st, key, b"version one")["e_tag"]
        listed = [m for chunk in obs.list(st, prefix="checks/obstore") for m in chunk]
        out["ETag on PUT / LIST / GET"] = _yes(
            bool(first) and all(m["e_tag"] for m in listed) and bool(obs.get(st, key).meta["e_tag"])
        )
        part = bytes(obs.get(st, key, options={"range": (0, 4)}).bytes())
        out["ranged GET with a byte limit"] = f"yes (`options={{'range': (0, 4)}}` gave {len(part)} bytes)"
        whole = bytes(obs.get(st, key, options={"range": (0, 100000)}).bytes())
        out["range past the end"] = f"the whole object ({len(whole)} bytes)"
        out["create-only conflict"] = _outcome(lambda: obs.put(st, key, b"x", mode="create"))
        second = obs.put(st, key, b"version two", mode={"e_tag": first})["e_tag"]
        out["replace with If-Match (current ETag)"] = "applied, new ETag returned" if second != first else "?"
        out["replace with If-Match (stale ETag)"] = _outcome(lambda: obs.put(st, key, b"three", mode={"e_tag": first}))
        out["GET with If-Match (stale ETag)"] = _outcome(lambda: obs.get(st, key, options={"if_match": first}))
        out["conditional delete (stale ETag)"] = "no API: `delete(store, paths)` takes no condition"
        out["conditional delete (current ETag)"] = "no API (plain delete only)"
        obs.put(st, "checks/obstore-empty", b"")
        out["ranged GET of an empty object"] = _outcome(
            lambda: obs.get(st, "checks/obstore-empty", options={"range": (0, 10)}).bytes()
        )
        return out


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


STATUS = {  # how each client words these statuses (s3fs maps them to OSError subclasses with the server's text)
    "412": ("412", "precondition", "pre-condition"),
    "416": ("416", "invalidrange", "not satisfiable"),
    "404": ("404", "not found", "nosuchkey"),
}


def _outcome(call: Callable[[], Any]) -> str:
    """What a call that should fail raised: its exception class and the HTTP status in its message."""
    try:
        call()
    except Exception as exc:
        text = f"{exc} {exc.__cause__ or ''}".lower()
        status = next((code for code, needles in STATUS.items() if any(w in text for w in needles)), "")
        return f"`{type(exc).__name__}`" + (f" (HTTP {status})" if status else "")
    return "succeeded (no error)"


# --- measuring ---------------------------------------------------------------------------------------------------
class ServerCpu:
    """CPU seconds of the moto server process (and children)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)

    def seconds(self) -> float:
        total = 0.0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except Exception:  # a child that just ended
                pass
        return total


def measure(work: Callable[[], int], server: ServerCpu) -> dict[str, float]:
    s0, c0, t0 = server.seconds(), time.process_time(), time.perf_counter()
    amount = work()
    wall = time.perf_counter() - t0
    return {
        "wall": wall,
        "amount": amount,
        "client_cpu": time.process_time() - c0,
        "server_cpu": server.seconds() - s0,
    }


def one_round(c: Any, r: int, server: ServerCpu, body: bytes, max_bytes: int, puts: int) -> dict[str, dict[str, float]]:
    """One client's LIST, GET (of what it listed), PUT and create-only PUT (fresh keys each round)."""
    out: dict[str, dict[str, float]] = {}
    listed: list[tuple[str, str | None]] = []

    def do_list() -> int:
        listed[:] = c.list(LIST_PREFIX)
        return len(listed)

    out["list"] = measure(do_list, server)
    keys, tags = [k for k, _ in listed], [e for _, e in listed]
    out["get"] = measure(lambda: c.get_many(keys, tags, max_bytes), server)
    for mode, create in (("put", False), ("put_create", True)):
        names = [f"{mode}/{c.name}/{r}/{i:05d}" for i in range(puts)]
        out[mode] = measure(lambda names=names, create=create: c.put_many(names, body, create), server)
    return out


def seed(srv: MotoServer, bucket: str, n: int, size: int) -> None:
    """``n`` distinct objects of ``size`` bytes under ``LIST_PREFIX`` (not timed)."""
    from fsspec.asyn import sync

    fs = srv.client()

    async def all_puts() -> None:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            body = i.to_bytes(8, "big") + os.urandom(size - 8)
            async with gate:
                await fs._call_s3("put_object", Bucket=bucket, Key=f"{LIST_PREFIX}{i:07d}.md", Body=body)

        await asyncio.gather(*(one(i) for i in range(n)))

    sync(fs.loop, all_puts)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.storage.objects import FETCH_CONCURRENCY

    assert FETCH_CONCURRENCY == CONCURRENCY, "the pipeline's GET concurrency changed: update CONCURRENCY"
    obstore = _obstore()
    # Location's s3fs client reads the endpoint and keys from the environment, which serving() sets.
    with MotoServer().serving() as srv:
        assert srv.proc is not None
        server = ServerCpu(srv.proc.pid)
        bucket, put_bucket = srv.new_bucket("list"), srv.new_bucket("put")
        t0 = time.perf_counter()
        seed(srv, bucket, args.objects, args.size)
        print(f"seeded {args.objects} objects of {args.size} B in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        clients: list[Any] = [S3fsClient(bucket, put_bucket)]
        if obstore is not None:
            clients.append(ObstoreClient(srv.endpoint, bucket, put_bucket))
        body = os.urandom(args.size)
        max_bytes = args.size * 4  # a limit above the object's size, as the pipeline's max_bytes is

        # one untimed pass each: connection pools, imports, moto's first-request costs
        for c in clients:
            listed = c.list(LIST_PREFIX)
            assert len(listed) == args.objects, (c.name, len(listed))
            c.get_many([k for k, _ in listed[:200]], [e for _, e in listed[:200]], max_bytes)
            c.put_many([f"warm/{c.name}/{i}" for i in range(100)], body, create=False)

        results: dict[str, dict[str, list[dict[str, float]]]] = {}
        for r in range(args.rounds):
            order = clients if r % 2 == 0 else clients[::-1]
            for c in order:
                runs = results.setdefault(c.name, {})
                for name, figures in one_round(c, r, server, body, max_bytes, args.puts).items():
                    runs.setdefault(name, []).append(figures)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

        checks = {c.name: c.checks() for c in clients}
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cpu": _cpu(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "load_average_start": os.getloadavg(),
            "python": platform.python_version(),
            "versions": {p: _version(p) for p in ("s3fs", "aiobotocore", "botocore", "obstore", "moto")},
        },
        "args": vars(args),
        "obstore_missing": obstore is None,
        "results": results,
        "checks": checks,
    }


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --- reporting ---------------------------------------------------------------------------------------------------
MEASURES = {
    "list": "LIST {objects} keys (paginated)",
    "get": "GET {objects} × {size} B, 64 in flight, Range + If-Match",
    "put": "PUT {puts} × {size} B, 64 in flight",
    "put_create": "PUT create-only {puts} × {size} B, 64 in flight",
}


def summarize(runs: list[dict[str, float]], size: int, measure_name: str) -> dict[str, float]:
    rates = [r["amount"] / r["wall"] for r in runs]
    ops = [r["amount"] if measure_name != "get" else r["amount"] / size for r in runs]  # GET: amount is bytes
    unit = "keys" if measure_name == "list" else "ops"
    return {
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "client_cpu_ms_per_1000": statistics.median(r["client_cpu"] / n * 1e6 for r, n in zip(runs, ops, strict=True)),
        "server_busy": statistics.median(r["server_cpu"] / r["wall"] for r in runs),
        "unit": unit,  # type: ignore[dict-item]
    }


def report(data: dict[str, Any]) -> str:
    a = data["args"]
    lines = [
        f"`python -m bench.storage_clients --objects {a['objects']} --size {a['size']} --rounds {a['rounds']} "
        f"--puts {a['puts']}` ({data['date']}, {data['machine']['cpu']}, {data['machine']['usable_cores']} cores, "
        f"load average at start {', '.join(f'{x:.2f}' for x in data['machine']['load_average_start'])}; "
        + ", ".join(f"{k} {v}" for k, v in data["machine"]["versions"].items())
        + ")",
        "",
    ]
    if data["obstore_missing"]:
        lines += ["**obstore is not installed: only s3fs was measured** (`pip install obstore` to compare).", ""]
    names = list(data["results"])
    head = "| measure | " + " | ".join(f"{n} median (min-max)" for n in names)
    head += " | obstore / s3fs |" if len(names) == 2 else " |"
    head += " " + " | ".join(f"{n}: client CPU ms per 1,000 | {n}: server busy" for n in names) + " |"
    lines += [head, "|---" * (1 + len(names) + (len(names) == 2) + 2 * len(names)) + "|"]
    for m, title in MEASURES.items():
        s = {n: summarize(data["results"][n][m], a["size"], m) for n in names}
        cells = []
        for n in names:
            x = s[n]
            if m == "get":
                cells.append(
                    f"{x['median'] / 1e6:.2f} MB/s = {x['median'] / a['size']:,.0f} ops/s "
                    f"({x['min'] / a['size']:,.0f}-{x['max'] / a['size']:,.0f})"
                )
            else:
                cells.append(f"{x['median']:,.0f} {x['unit']}/s ({x['min']:,.0f}-{x['max']:,.0f})")
        row = f"| {title.format(**a)} | " + " | ".join(cells)
        if len(names) == 2:
            row += f" | {s['obstore']['median'] / s['s3fs']['median']:.2f}×"
        row += " | " + " | ".join(
            f"{s[n]['client_cpu_ms_per_1000']:,.0f} | {s[n]['server_busy'] * 100:.0f}% of a core" for n in names
        )
        lines.append(row + " |")
    lines += [
        "",
        "| behaviour (on moto) | " + " | ".join(data["checks"]) + " |",
        "|---" * (1 + len(data["checks"])) + "|",
    ]
    keys = list(next(iter(data["checks"].values())))
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(data["checks"][n].get(k, "") for n in data["checks"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=5000, help="objects listed and fetched (default 5000)")
    ap.add_argument("--size", type=int, default=4096, help="bytes per object (default 4096)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds, clients alternating (default 5)")
    ap.add_argument("--puts", type=int, default=1000, help="objects per PUT measurement (default 1000)")
    ap.add_argument("--json", help="also write the raw figures here")
    args = ap.parse_args(argv)
    if args.size < 8:
        ap.error("--size must be at least 8 bytes")
    data = run(args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(data, fh, indent=1, default=str)
    print(report(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
