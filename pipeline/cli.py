"""`pipeline` command line: parses options, calls the flow or a stage, turns errors into one line.

Prefect is imported only by the commands that need it, so `query`, `status`
and `validate` start fast and parser worker processes never load it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pipeline.config import RUNNERS
from pipeline.errors import ConfigError, PipelineError, exit_code, explain

if TYPE_CHECKING:
    from pipeline.storage.location import Location

ORCHESTRATORS = ("prefect", "none")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that keeps what ``add_argument`` returns (argparse's public API), so the docs
    can list every option without reading argparse's private ``_actions``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.arguments: list[argparse.Action] = []  # before super().__init__, which adds -h
        self.commands: dict[str, _Parser] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.arguments.append(action)
        return action

    def add_mutually_exclusive_group(self, **kwargs: Any) -> Any:
        group = super().add_mutually_exclusive_group(**kwargs)
        add = group.add_argument

        def add_argument(*args: Any, **kwargs: Any) -> argparse.Action:
            action = add(*args, **kwargs)
            self.arguments.append(action)
            return action

        group.add_argument = add_argument  # type: ignore[method-assign]
        return group


def _add_common(p: argparse.ArgumentParser, seeds: bool = True, warehouse: bool = True) -> None:
    if seeds:
        p.add_argument(
            "--seeds", help="folder or s3://bucket/prefix of seed documents (default ./seeds, env PIPELINE_SEEDS)"
        )
        p.add_argument(
            "--pattern",
            action="append",
            dest="patterns",
            metavar="GLOB",
            help="file name pattern to take, repeatable (default *.md, *.markdown, *.txt)",
        )
        p.add_argument("--max-file-bytes", type=int, help="size cap per file (default 5 MiB)")
        p.add_argument("--workers", type=int, help="parser processes (default: CPU count)")
    if warehouse:
        p.add_argument(
            "--warehouse", help="warehouse folder or s3://bucket/prefix (default ./warehouse, env PIPELINE_WAREHOUSE)"
        )
    p.add_argument(
        "--storage-option",
        action="append",
        dest="storage_option",
        metavar="KEY=VALUE",
        help="extra s3fs option, repeatable (value parsed as JSON when it can be, e.g. anon=true; env "
        "PIPELINE_STORAGE_OPTIONS as a JSON object); keys given as key=/secret= win, else s3fs reads "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials; endpoint from "
        "AWS_ENDPOINT_URL, region from AWS_REGION. Prefect shows these options as '**********'",
    )


def _add_runner(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runner",
        choices=RUNNERS,
        help="where parsing and merges run: local worker processes (default) or a Dask cluster (env PIPELINE_RUNNER)",
    )
    p.add_argument(
        "--dask-address",
        metavar="tcp://HOST:PORT",
        help="scheduler of a running Dask cluster (default: start a LocalCluster; env PIPELINE_DASK_ADDRESS)",
    )


def build_parser() -> _Parser:
    parser = _Parser(prog="pipeline", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--debug", action="store_true", help="show tracebacks and Prefect's own logs")
    sub = parser.add_subparsers(dest="command", required=True)  # subcommands are _Parser too
    parser.commands = sub.choices

    run = sub.add_parser(
        "run",
        help="load seeds into the warehouse and publish a new snapshot",
        description="load new/changed files, publish a snapshot, print a summary; exit 0 even with rejects",
    )
    _add_common(run)
    _add_runner(run)
    run.add_argument(
        "--wait", type=float, dest="wait_seconds", help="seconds to wait for another run's lock (default 0)"
    )
    run.add_argument(
        "--orchestrator",
        choices=ORCHESTRATORS,
        default=os.environ.get("PIPELINE_ORCHESTRATOR", "prefect"),
        help="run as the Prefect flow `ingest` (default) or directly, without Prefect",
    )
    run.add_argument("--format", choices=("text", "json"), default="text", help="summary format")
    run.add_argument("--quiet", action="store_true", help="no progress lines")

    val = sub.add_parser(
        "validate",
        help="check a seeds folder without writing anything",
        description="check a folder without writing anything; exit 1 when a file would be quarantined "
        "(pre-commit hook)",
    )
    _add_common(val, warehouse=False)
    val.add_argument("--format", choices=("text", "json"), default="text")

    q = sub.add_parser(
        "query",
        help="read-only SQL over the current snapshot",
        description="read-only SQL over the newest snapshot; --tables lists tables with row counts",
    )
    q.add_argument("sql", nargs="?", help="SQL to run (SELECT, WITH, DESCRIBE, SHOW, EXPLAIN)")
    _add_common(q, seeds=False)
    q.add_argument("--format", choices=("table", "csv", "json", "parquet"), default="table")
    q.add_argument("--output", help="write the result to this file instead of stdout")
    q.add_argument("--tables", action="store_true", help="list tables with row counts")
    q.add_argument(
        "--as-of",
        metavar="VERSION|TIME",
        help="read a retained earlier version: its number, or a time (the newest version committed by then)",
    )

    hist = sub.add_parser(
        "history",
        help="list the retained versions (time travel targets)",
        description="the retained versions: version, run, commit time, files seen/loaded/rejected, rows per table",
    )
    _add_common(hist, seeds=False)
    hist.add_argument("--format", choices=("text", "json"), default="text")

    st = sub.add_parser(
        "status",
        help="last runs, row counts, rejects and data age (no Prefect needed)",
        description="last runs, row counts, rejects, data age; exit 1 when the last run failed or data is too old",
    )
    _add_common(st, seeds=False)
    st.add_argument("--format", choices=("text", "json"), default="text")
    st.add_argument("--max-age", help="exit non-zero when the last run is older than this (e.g. 90m, 6h, 2d)")

    cat = sub.add_parser(
        "catalog",
        help="rebuild warehouse/catalog.duckdb (e.g. after moving the folder)",
        description="rebuild <warehouse>/catalog.duckdb (after moving the warehouse folder)",
    )
    _add_common(cat, seeds=False)

    docs = sub.add_parser(
        "docs",
        help="write the data dictionary and ER diagram from the schema",
        description="regenerate docs/data-dictionary.md, docs/erd.md, docs/rejects.md and the README's "
        "generated tables (tables, commands, example queries)",
    )
    docs.add_argument("--out", default="docs", help="folder to write into (default ./docs)")

    serve = sub.add_parser(
        "serve",
        help="serve the ingest flow as a Prefect deployment on a schedule",
        description="serve the ingest flow as a scheduled Prefect deployment",
    )
    _add_common(serve)
    _add_runner(serve)
    group = serve.add_mutually_exclusive_group()
    group.add_argument("--cron", help="cron schedule (default '0 * * * *': hourly)")
    group.add_argument("--interval", type=float, help="interval in seconds")
    serve.add_argument("--name", default="scheduled", help="deployment name (default scheduled)")
    serve.add_argument(
        "--collision",
        choices=("enqueue", "cancel"),
        default="enqueue",
        help="when a run is due while one is running: queue it (default) or cancel it",
    )
    srv = sub.add_parser(
        "server",
        help="start, stop or check the local Prefect server that runs use when PREFECT_API_URL is not set",
        description="manage the local Prefect server (127.0.0.1) that `pipeline run` starts and reuses when "
        "no PREFECT_API_URL is set; status exits 1 when none is running",
    )
    srv.add_argument("action", choices=("start", "stop", "status"))
    srv.add_argument("--port", type=int, help="port for `start` (default 4200, or a free one when it is taken)")
    return parser


def _storage_options(pairs: list[str] | None) -> str | None:
    """--storage-option KEY=VALUE pairs as the JSON object Settings keeps (None when none given)."""
    if not pairs:
        return None
    import json

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--storage-option {pair!r}: use KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return json.dumps(options, sort_keys=True)


def _settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("seeds", "warehouse", "patterns", "max_file_bytes", "workers", "wait_seconds", "runner", "dask_address")
    values = {k: getattr(args, k, None) for k in keys}
    values["storage_options"] = _storage_options(getattr(args, "storage_option", None))
    return values


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline import report
    from pipeline.config import load_settings
    from pipeline.progress import reporter

    settings = load_settings(_settings_overrides(args))
    shown = reporter(args.quiet)
    t0 = time.perf_counter()
    try:
        if args.orchestrator == "none":
            from pipeline.engine.stages import make_run_id, run_all, utc_now

            summary = report.run_summary(run_all(settings, make_run_id(utc_now()), reporter=shown))
        else:
            summary = _run_with_prefect(args, settings, shown)
            summary["prefect_seconds"] = round(time.perf_counter() - t0 - (summary["pipeline_seconds"] or 0.0), 3)
    finally:
        shown.close()
    if args.format == "json":
        print(report.to_json(summary))
    else:
        print(report.format_summary(summary))
    for warning in summary.get("warnings", ()):
        print(f"pipeline: warning: {warning}", file=sys.stderr)
    return 0


def _run_with_prefect(args: argparse.Namespace, settings: Any, shown: Any) -> dict[str, Any]:
    """The flow `ingest` in this process, recorded by the configured Prefect API or the local server."""
    from pipeline.orchestration import prefect_env

    prefect_env.apply_defaults(debug=args.debug)
    api = prefect_env.configured_api()
    if api is None and prefect_env.local_server_wanted():
        from pipeline.orchestration import server

        local, started = server.start()
        api = local.api_url
        if started:
            print(
                f"pipeline: started a local Prefect server for this and later runs: {local.url} "
                "(stop it with `pipeline server stop`)",
                file=sys.stderr,
            )
    if settings.runner == "dask" and api is None:
        prefect_env.require_api("--runner dask")
    from pipeline.config import to_parameters
    from pipeline.orchestration import flow
    from pipeline.orchestration.prefect_support import call_flow

    token = flow.console.set(shown)
    try:
        with prefect_env.using_api(api):
            summary: dict[str, Any] = call_flow(flow.ingest, api is None, **to_parameters(settings))
    finally:
        flow.console.reset(token)
    summary["prefect_api_url"] = api
    summary["flow_run_url"] = prefect_env.flow_run_url(api, summary["flow_run_id"])
    return summary


def cmd_server(args: argparse.Namespace) -> int:
    from pipeline.orchestration import server

    if args.action == "start":
        running, started = server.start(port=args.port)
        what = "started" if started else "already running"
        print(f"Prefect server {what}: {running.url} (API {running.api_url}; pid {running.pid}, home {running.home})")
        return 0
    if args.action == "stop":
        stopped = server.stop()
        print(f"stopped the Prefect server at {stopped.url}" if stopped else "no local Prefect server was running")
        return 0
    current = server.status()
    if current is None:
        print(f"no local Prefect server is running (home {server.home()})")
        return 1
    print(f"Prefect server running: {current.url} (API {current.api_url}; pid {current.pid}, home {current.home})")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from pipeline import report
    from pipeline.config import load_settings
    from pipeline.engine.validate import format_report, validate_folder

    settings = load_settings(_settings_overrides(args)).resolved()
    entries = validate_folder(settings)
    print(report.to_json(entries) if args.format == "json" else format_report(entries))
    return 1 if any(not e["ok"] for e in entries) else 0


def _warehouse(args: argparse.Namespace) -> Location:
    from pipeline.config import load_settings

    return load_settings(_settings_overrides(args)).warehouse_location()


def cmd_query(args: argparse.Namespace) -> int:
    from pipeline.warehouse import query

    warehouse = _warehouse(args)
    if args.tables:
        table = query.list_tables(warehouse, args.as_of)
    elif args.sql:
        table = query.run_query(warehouse, args.sql, args.as_of)
    else:
        raise ConfigError("give a SQL string or --tables")
    fmt = "table" if args.tables and args.format == "parquet" else args.format
    data = query.render(table, fmt, to_file=bool(args.output))
    if args.output:
        with open(args.output, "wb") as fh:
            fh.write(data)
    else:
        sys.stdout.write(data.decode("utf-8"))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from pipeline.report import to_json
    from pipeline.warehouse.history import format_history, history

    entries = history(_warehouse(args))
    print(to_json(entries) if args.format == "json" else format_history(entries))
    return 0


def parse_age(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1] in units:
            return timedelta(seconds=float(text[:-1]) * units[text[-1]])
        return timedelta(seconds=float(text))
    except (ValueError, IndexError):
        raise ConfigError(f"--max-age {text!r}: use a number with s, m, h or d (e.g. 6h)") from None


def cmd_status(args: argparse.Namespace) -> int:
    from pipeline.warehouse.status import format_status, warehouse_status

    max_age = parse_age(args.max_age) if args.max_age else None
    info = warehouse_status(_warehouse(args), datetime.now(UTC), max_age)
    if args.format == "json":
        from pipeline.report import to_json

        print(to_json(info))
    else:
        print(format_status(info))
    return 0 if info["healthy"] else 1


def cmd_catalog(args: argparse.Namespace) -> int:
    import tempfile

    from pipeline.config import load_settings
    from pipeline.engine.stages import follow_commit
    from pipeline.storage.local import LocalFolder
    from pipeline.warehouse import commits

    settings = load_settings(_settings_overrides(args))
    warehouse = settings.warehouse_location()
    lock = commits.acquire(warehouse, "catalog-rebuild", 60, settings.lease_seconds)
    scratch = LocalFolder(tempfile.mkdtemp(prefix="pipeline-catalog-"))
    try:
        snap = commits.require_newest(warehouse)
        _lake, warnings = follow_commit(warehouse, snap, settings, scratch)
    finally:
        scratch.delete_tree("")
        lock.release()
    for warning in warnings:
        print(f"pipeline: warning: {warning}", file=sys.stderr)
    print(
        f"rebuilt {warehouse.join(commits.CATALOG)} and the Delta logs for snapshot {snap.id} (version {snap.version})"
    )
    return 1 if warnings else 0


def command_docs() -> list[Any]:
    """Every command as the README's command table shows it (``docs.Command``), from the parser."""
    from pipeline.docs import Command

    out = []
    for name, cmd in build_parser().commands.items():
        positional = " ".join(
            f'"{a.metavar or a.dest.upper()}"' if a.dest == "sql" else str(a.metavar or a.dest.upper())
            for a in cmd.arguments
            if not a.option_strings
        )
        options = tuple(a.option_strings[-1] for a in cmd.arguments if a.option_strings and a.dest != "help")
        out.append(Command(f"pipeline {name} {positional}".rstrip(), cmd.description or "", options))
    return out


def cmd_docs(args: argparse.Namespace) -> int:
    from pipeline.docs import write_docs

    for path in write_docs(args.out, command_docs()):
        print(f"wrote {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pipeline.orchestration import prefect_env

    prefect_env.apply_defaults(debug=args.debug)
    from pipeline.config import load_settings, to_parameters
    from pipeline.orchestration.serve import serve

    settings = load_settings(_settings_overrides(args)).resolved()  # absolute paths for every run
    if settings.runner == "dask":
        prefect_env.require_api("--runner dask")
    # Every setting is stored in the deployment (the UI shows what each run gets), except the
    # storage options: a stored secret comes back as '**********'. The runs this process starts
    # inherit its environment, so they get the options from there, never in clear on the server.
    os.environ["PIPELINE_STORAGE_OPTIONS"] = settings.storage_options
    params = to_parameters(settings, secrets=False)
    serve(params, cron=args.cron, interval=args.interval, name=args.name, collision=args.collision)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "validate": cmd_validate,
    "query": cmd_query,
    "status": cmd_status,
    "history": cmd_history,
    "catalog": cmd_catalog,
    "docs": cmd_docs,
    "serve": cmd_serve,
    "server": cmd_server,
}


def _drop_frames(exc: BaseException | None) -> None:
    """Free the locals of a failed run's frames: Prefect keeps the exception until exit, and DuckDB
    objects in those frames would make its bindings print 'leaked instance' lines after our error."""
    import traceback

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "docs":
        from pipeline.config import environment_warning

        note = environment_warning()
        if note:
            print(f"pipeline: warning: {note}", file=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except PipelineError as exc:
        if args.debug:
            raise
        _drop_frames(exc)
        print(f"pipeline: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pipeline: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `pipeline query ... | head`
        sys.stderr.close()
        return 0
    except OSError as exc:  # storage failed (after retries where they are safe): nothing was published
        if args.debug:
            raise
        _drop_frames(exc)
        print(f"pipeline: error: storage failed: {exc} (nothing was published)", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or an environment failure: still one line unless --debug
        if args.debug:
            raise
        _drop_frames(exc)
        text = explain(exc)  # known ones (no credentials, DuckDB out of memory) in words
        if text.startswith("unexpected error"):
            print(f"pipeline: {text}", file=sys.stderr)
        else:
            print(f"pipeline: error: {text}", file=sys.stderr)
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
