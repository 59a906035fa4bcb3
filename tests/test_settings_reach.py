"""Every setting reaches every run: through Prefect, each one visibly changes what the run does.

A run's settings travel as the flow's parameters (``config.to_parameters``), so a setting given as
an option or a PIPELINE_* variable must act the same way with ``--orchestrator none``, on the
default Prefect path, under ``pipeline serve`` and on Dask workers. Few Prefect runs, each of
them changing many settings at once, observed as an operator would: the Prefect API, the S3
server, the warehouse's own tables and history. The S3 credentials are given only with
``--storage-option`` (the environment has none), and must never show in clear in the API.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.prefect_server import (
    PrefectServer,
    count_runs,
    deployment_runs,
    run_logs,
    stop_group,
    task_name,
    task_runs,
    wait_until,
)
from harness.s3_server import MotoServer, put
from pipeline import faults

from .conftest import REPO, SEEDS, cli_env, run_cli

pytestmark = pytest.mark.server

KEY, SECRET = "AKIAREACHTEST0000001", "reach-secret-value-s3cr3t"  # moto accepts any pair
CREDENTIALS = ("--storage-option", f"key={KEY}", "--storage-option", f"secret={SECRET}")
FIRST = ("001_d058e49e30bb2af5.md", "002_2371d154f89e6ff4.md", "003_51755eb28cfc0b0e.md")
TOO_LARGE = "008_bec555634c08a543.md"  # 2,666 bytes; every other .md seed is smaller than 2,660
ALL_SEEDS = sorted(p.relative_to(SEEDS).as_posix() for p in SEEDS.rglob("*") if p.is_file())
MD_SEEDS = [name for name in ALL_SEEDS if name.endswith(".md")]

# Every setting changed from its default (storage options come as --storage-option).
SETTINGS_ENV = {
    "PIPELINE_PATTERNS": "*.md",  # default also takes *.txt and *.markdown
    "PIPELINE_MAX_FILE_BYTES": "2660",  # default 5 MiB
    "PIPELINE_WORKERS": "1",
    "PIPELINE_BATCH_SIZE": "1",  # default 1000 (7 files on 1 worker: batches of 2)
    "PIPELINE_RUNNER": "dask",
    "PIPELINE_WAIT_SECONDS": "60",  # default 0: a held lease fails the run at once
    "PIPELINE_LEASE_SECONDS": "900",  # default 60
    "PIPELINE_RETENTION": "1",  # default 24h: keeps every version of the last day
    "PIPELINE_GC_GRACE_SECONDS": "0",  # default 3600
    "PIPELINE_MEMORY_LIMIT": "300MB",  # default 512MB (the failing run below uses 1MB)
}


def s3_env(s3: MotoServer, base: dict[str, str], home: Path, **extra: str) -> dict[str, str]:
    """The S3 server's endpoint and region, but no credentials: they may only come from --storage-option."""
    env = {**base, **s3.env(), "HOME": str(home), **extra}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)
    return env


def upload(s3: MotoServer, bucket: str, names: tuple[str, ...] | list[str]) -> None:
    """Seeds (paths relative to the shipped folder) under s3://bucket/seeds/."""
    fs = s3.client()
    for name in names:
        put(fs, bucket, f"seeds/{name}", (SEEDS / name).read_bytes())


def cli_json(*args: str, env: dict[str, str]) -> Any:
    return json.loads(run_cli(*args, "--format", "json", env=env).stdout)


class LeaseWatch:
    """Reads the warehouse's lease while a run holds it: the seconds it has left when first seen."""

    def __init__(self, s3: MotoServer, lease: str, foreign: str) -> None:
        self.fs, self.lease, self.foreign = s3.client(), lease, foreign
        self.left: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set() and self.left is None:
            with contextlib.suppress(FileNotFoundError, ValueError, OSError):
                body = json.loads(self.fs.cat_file(self.lease))
                if body.get("run_id") != self.foreign:
                    self.left = float(body["expires_at"]) - time.time()
            self.fs.invalidate_cache()
            self._stop.wait(0.1)

    def __enter__(self) -> LeaseWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_every_setting_reaches_the_prefect_run_and_its_dask_workers(
    prefect_server: PrefectServer, s3: MotoServer, tmp_path: Path
) -> None:
    bucket = s3.new_bucket("reach")
    seeds, wh = f"s3://{bucket}/seeds", f"s3://{bucket}/wh"
    env = s3_env(s3, cli_env(**SETTINGS_ENV), tmp_path)
    # Run 0, without Prefect: the same settings, credentials only as options.
    upload(s3, bucket, FIRST)
    run_cli("run", "--orchestrator", "none", "--quiet", "--seeds", seeds, "--warehouse", wh, *CREDENTIALS, env=env)

    # Run 1, the default Prefect path (Dask: PIPELINE_RUNNER), while another run's lease is held for 15 s more
    # (longer than the CLI takes to start: the run must wait for it).
    upload(s3, bucket, ALL_SEEDS)
    foreign = "someone-else"
    put(s3.client(), bucket, "wh/.lease.json", json.dumps({"run_id": foreign, "expires_at": time.time() + 15}).encode())
    with LeaseWatch(s3, f"{bucket}/wh/.lease.json", foreign) as lease:
        proc = run_cli(
            "run", "--quiet", "--format", "json", "--seeds", seeds, "--warehouse", wh, *CREDENTIALS,
            env={**prefect_server.client_env(), **env, faults.SLEEP_HOLDING_LOCK: "1"},
        )  # fmt: skip
    summary = json.loads(proc.stdout)
    assert summary["runner"] == "dask"  # runner
    files = summary["files"]
    # patterns (no .txt), max_file_bytes (one too large), storage options (the S3 loads worked at all):
    assert files["seen"] == len(MD_SEEDS) and files["parsed"] == len(MD_SEEDS) - len(FIRST), files
    assert files["rejected"] == 1 and files["loaded"] == len(MD_SEEDS) - 1, files
    rejects = cli_json("query", "select source_path, reason from rejects", "--warehouse", wh, *CREDENTIALS, env=env)
    assert rejects == [{"source_path": TOO_LARGE, "reason": "too_large"}]
    # wait_seconds: the run waited for the foreign lease to expire; lease_seconds: its own lease's term.
    assert lease.left is not None and lease.left > 600, lease.left

    # batch_size and workers: one parse-batch task per file on the Dask cluster (1000 would give
    # batches of two on one worker), each a Prefect task run.
    def recorded() -> list[str] | None:
        with prefect_server.client() as client:
            runs = task_runs(client, summary["flow_run_id"])
        done = [task_name(t) for t in runs if t.state is not None and t.state.is_final()]
        return done if len(done) >= summary["task_runs"] else None

    names = wait_until(recorded, 30, interval=0.3, what="the run's task runs")
    assert names.count("parse-batch") == files["parsed"], names

    # retention 1 and no grace: the first version and its files are gone (24h would keep both).
    history = cli_json("history", "--warehouse", wh, *CREDENTIALS, env=env)
    assert [v["version"] for v in history] == [summary["version"]], history

    # What the Prefect API (and so the UI) shows: every setting as a parameter, the options masked.
    with prefect_server.client() as client:
        flow_run = client.read_flow_run(summary["flow_run_id"])
        logs = run_logs(client, flow_run.id)
    params = flow_run.parameters
    assert params["storage_options"] == "**********"
    assert params["patterns"] == ["*.md"] and params["batch_size"] == 1 and params["workers"] == 1
    assert params["memory_limit"] == "300MB" and params["retention"] == "1" and params["lease_seconds"] == 900
    shown = json.dumps(params) + " ".join(log.message for log in logs)
    assert SECRET not in shown and KEY not in shown


def test_a_tiny_memory_limit_fails_the_prefect_run_naming_the_setting_and_the_stage(
    prefect_server: PrefectServer, seeds: Path, tmp_path: Path
) -> None:
    wh = tmp_path / "wh"
    env = prefect_server.client_env(PIPELINE_MEMORY_LIMIT="1MB")
    proc = run_cli("run", "--quiet", "--seeds", str(seeds), "--warehouse", str(wh), env=env, check=False)
    assert proc.returncode == 1, proc.stderr
    warning, line = proc.stderr.splitlines()
    assert warning.startswith("pipeline: warning: settings from the environment: PIPELINE_MEMORY_LIMIT=1MB")
    found = re.match(r"pipeline: error: stage (\w+) of run (\S+) failed, nothing was published \((.*?)\): (.*)", line)
    assert found, line
    stage, run_id, then, why = found.groups()
    assert stage in ("build", "check") and then == "the next run fails the same way until this is fixed", line
    assert "PIPELINE_MEMORY_LIMIT" in why and "memory_limit" in why
    assert not (wh / "current").exists()
    status = json.loads(run_cli("status", "--warehouse", str(wh), "--format", "json", check=False).stdout)
    assert f"stage {stage} of run {run_id}" in status["problem"], status  # the failure record keeps the stage

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with prefect_server.client() as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_="ingest-seeds-")))
    [flow_run] = [r for r in runs if r.parameters.get("warehouse") == str(wh)]
    assert flow_run.state_type.value == "FAILED" and flow_run.parameters["memory_limit"] == "1MB"
    assert f"stage {stage} of run {run_id}" in flow_run.state.message


def test_missing_s3_credentials_are_one_line_naming_where_they_are_read_from(
    prefect_server: PrefectServer, s3: MotoServer, tmp_path: Path
) -> None:
    bucket = s3.new_bucket("nocreds")
    upload(s3, bucket, FIRST)
    env = s3_env(s3, prefect_server.client_env(), tmp_path)
    proc = run_cli(
        "run", "--quiet", "--seeds", f"s3://{bucket}/seeds", "--warehouse", f"s3://{bucket}/wh", env=env, check=False
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("pipeline: error: no S3 credentials found; they are read from --storage-option key="), line
    assert "AWS_ACCESS_KEY_ID" in line and "~/.aws/credentials" in line and "NoCredentialsError" not in line


@contextlib.contextmanager
def serving(
    server: PrefectServer, tmp_path: Path, *args: str, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    out = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", *args],
        cwd=REPO, env={**server.client_env(PREFECT_RUNNER_POLL_FREQUENCY="1"), **env},
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        stop_group(proc, signal.SIGTERM, timeout=30)
        out.close()


def test_serve_stores_every_setting_in_the_deployment_and_keeps_the_credentials_off_the_server(
    prefect_server: PrefectServer, s3: MotoServer, tmp_path: Path
) -> None:
    """A served deployment's runs get the settings the serve command had; the storage options reach
    them through serve's environment (a stored secret would come back as '**********')."""
    bucket = s3.new_bucket("serve")
    upload(s3, bucket, ALL_SEEDS)
    seeds, wh = f"s3://{bucket}/seeds", f"s3://{bucket}/wh"
    env = s3_env(s3, {}, tmp_path, PIPELINE_PATTERNS="*.md", PIPELINE_RETENTION="3")
    # The session's server: this deployment is named `reach`, so the prefect.yaml deployment `ingest/scheduled`
    # that test_prefect_run leaves there is never this one (every lookup below is by this name or its id).
    server = prefect_server
    with serving(
        server, tmp_path, "--interval", "3600", "--name", "reach", "--seeds", seeds, "--warehouse", wh, *CREDENTIALS,
        env=env,
    ) as proc:  # fmt: skip

        def deployed() -> Any:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-4000:]
            with server.client() as client:
                found = client.read_deployments()
            return next((d for d in found if d.name == "reach"), None)

        deployment = wait_until(deployed, 60, what="the served deployment")
        with server.client() as client:  # the next hourly run, now (as "Quick run" in the UI does)
            client.create_flow_run_from_deployment(deployment.id)

        def completed() -> bool:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-4000:]
            with server.client() as client:
                failed = deployment_runs(client, deployment.id, "FAILED", "CRASHED")
                assert not failed, [(r.name, r.state.message) for r in failed]
                return count_runs(client, deployment.id, "COMPLETED") >= 1

        wait_until(completed, 120, interval=1.0, what="a completed run of the served deployment")
        with server.client() as client:
            run = deployment_runs(client, deployment.id, "COMPLETED")[0]
    params = deployment.parameters
    assert params["patterns"] == ["*.md"] and params["retention"] == "3" and params["storage_options"] is None
    assert params["seeds"] == seeds and params["max_file_bytes"] == 5 * 1024 * 1024  # defaults stored too
    shown = json.dumps(params) + json.dumps(run.parameters)
    assert SECRET not in shown and KEY not in shown
    env_creds = s3_env(s3, cli_env(), tmp_path)
    info = cli_json("status", "--warehouse", wh, *CREDENTIALS, env=env_creds)
    assert info["healthy"] and info["rows"]["articles"] == len(MD_SEEDS), info  # patterns: no .txt
