"""A throw-away local Superset for tests/test_superset.py and tests/bi/superset/screenshot.py.

Runs in the project's interpreter (standard library only); Superset itself runs from .venv-superset,
built by harness.envs.ensure_venv from tests/bi/superset/requirements.txt. `LocalSuperset` prepares a
fresh SQLite metadata database in its home folder (db upgrade, an admin user, init), serves Superset
on 127.0.0.1 and a free port, and talks to it through the REST API with a bearer token, as a user's
script would. The time zone of the Superset process is the caller's choice (``tz``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "superset_config.py"
REQUIREMENTS = HERE / "requirements.txt"
USER, PASSWORD = "admin", "admin-only-on-127.0.0.1"
# The schema Superset lists for a DuckDB file: the database (named after the file) and its schema.
SCHEMA = "catalog.main"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def catalog_uri(catalog: Path) -> str:
    """The README's connection string: duckdb:/// plus the catalog's absolute path."""
    return f"duckdb:///{catalog.resolve()}"


# The README's connect_args: read-only, and nothing about time zones.
ENGINE_EXTRA = {"engine_params": {"connect_args": {"read_only": True}}}


class SupersetError(RuntimeError):
    pass


class LocalSuperset:
    def __init__(self, venv: Path, home: Path, tz: str = "UTC") -> None:
        self.venv, self.home, self.tz = venv, home, tz
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token: str | None = None
        self.timings: dict[str, float] = {}
        self.log = home / "superset.log"

    # --- process ------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPERSET_", "PIPELINE_", "FLASK_"))}
        env.update(
            SUPERSET_CONFIG_PATH=str(CONFIG),
            SUPERSET_TEST_HOME=str(self.home),
            SUPERSET_HOME=str(self.home),  # Superset's own files (uploads, keys) stay in the throw-away home
            FLASK_APP="superset",
            TZ=self.tz,
            PYTHONPATH="",  # nothing of the project's on Superset's path
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        return env

    def _superset(self, *args: str, timeout: float = 300) -> None:
        t0 = time.perf_counter()
        with open(self.log, "ab") as log:
            proc = subprocess.run(
                [str(self.venv / "bin" / "superset"), *args],
                env=self.env(),
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
        self.timings[" ".join(args[:2])] = round(time.perf_counter() - t0, 1)
        if proc.returncode != 0:
            raise SupersetError(f"superset {' '.join(args)} exited {proc.returncode}; see {self.log}:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self, ready_timeout: float = 180) -> LocalSuperset:
        self.home.mkdir(parents=True, exist_ok=True)
        self._superset("db", "upgrade")
        self._superset(
            "fab", "create-admin", "--username", USER, "--firstname", "Test", "--lastname", "Admin",
            "--email", "admin@example.invalid", "--password", PASSWORD,
        )  # fmt: skip
        self._superset("init")
        t0 = time.perf_counter()
        log = open(self.log, "ab")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [str(self.venv / "bin" / "superset"), "run", "-h", "127.0.0.1", "-p", str(self.port), "--with-threads"],
            env=self.env(),
            cwd=self.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._log_file = log
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise SupersetError(f"superset run exited {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise SupersetError(f"Superset not ready on {self.url} after {ready_timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.5)
        self.timings["server ready"] = round(time.perf_counter() - t0, 1)
        self.login()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        if getattr(self, "_log_file", None) is not None:
            self._log_file.close()

    def __enter__(self) -> LocalSuperset:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- REST ---------------------------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200, 201)) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        request.add_header("Accept", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=120) as reply:
                status, text = reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode(errors="replace")
        if status not in expect:
            raise SupersetError(f"{method} {path} -> HTTP {status}: {text[:2000]}")
        return json.loads(text) if text else None

    def login(self) -> None:
        reply = self.call(
            "POST",
            "/api/v1/security/login",
            {"username": USER, "password": PASSWORD, "provider": "db", "refresh": True},
        )
        self.token = reply["access_token"]

    def add_database(self, name: str, catalog: Path) -> int:
        body = {
            "database_name": name,
            "sqlalchemy_uri": catalog_uri(catalog),
            "extra": json.dumps(ENGINE_EXTRA),
            "expose_in_sqllab": True,
        }
        return int(self.call("POST", "/api/v1/database/", body)["id"])

    def schemas(self, database_id: int) -> list[str]:
        return list(self.call("GET", f"/api/v1/database/{database_id}/schemas/")["result"])

    def tables(self, database_id: int, schema: str = SCHEMA) -> list[str]:
        query = urllib.request.quote(f"(schema_name:'{schema}',force:!t)")
        reply = self.call("GET", f"/api/v1/database/{database_id}/tables/?q={query}")
        return sorted(t["value"] for t in reply["result"])

    def add_dataset(self, database_id: int, table: str, schema: str = SCHEMA) -> int:
        body = {"database": database_id, "schema": schema, "table_name": table}
        return int(self.call("POST", "/api/v1/dataset/", body)["id"])

    def dataset(self, dataset_id: int) -> dict[str, Any]:
        return dict(self.call("GET", f"/api/v1/dataset/{dataset_id}")["result"])

    def sql_lab(self, database_id: int, sql: str, schema: str = SCHEMA) -> dict[str, Any]:
        body = {
            "database_id": database_id,
            "sql": sql,
            "schema": schema,
            "runAsync": False,
            "queryLimit": 10000,
            "client_id": os.urandom(5).hex(),
        }
        return dict(self.call("POST", "/api/v1/sqllab/execute/", body))

    def chart_data(self, query_context: dict[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", "/api/v1/chart/data", query_context))

    def add_chart(self, name: str, dataset_id: int, viz_type: str, params: dict[str, Any]) -> int:
        body = {
            "slice_name": name,
            "viz_type": viz_type,
            "datasource_id": dataset_id,
            "datasource_type": "table",
            "params": json.dumps({**params, "viz_type": viz_type, "datasource": f"{dataset_id}__table"}),
        }
        return int(self.call("POST", "/api/v1/chart/", body)["id"])


def month_query_context(dataset_id: int, time_range: str = "No filter") -> dict[str, Any]:
    """Articles per month, the way Superset's bar chart asks for it: published_at at the month grain."""
    return {
        "datasource": {"id": dataset_id, "type": "table"},
        "force": True,
        "queries": [
            {
                "columns": [
                    {
                        "columnType": "BASE_AXIS",
                        "expressionType": "SQL",
                        "label": "published_at",
                        "sqlExpression": "published_at",
                        "timeGrain": "P1M",
                    }
                ],
                "metrics": ["count"],
                "filters": [{"col": "published_at", "op": "TEMPORAL_RANGE", "val": time_range}],
                "row_limit": 1000,
            }
        ],
        "result_format": "json",
        "result_type": "full",
    }
