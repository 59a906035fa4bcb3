"""Dask clusters: connect to a running one, or start a LocalCluster on loopback for this run.

Workers of our LocalCluster are not daemonic, so each can keep a child process that
parses (a parser crash then costs only that child, see ``parse.isolated_batch``). The
dashboard is off: its default port (8787) collides on shared machines.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pipeline.errors import ConfigError

# Set in the environment, not only in dask.config: a Nanny re-reads it whenever it restarts a
# worker (after a crash), and worker processes inherit it.
CLUSTER_ENV = {
    "DASK_DISTRIBUTED__WORKER__DAEMON": "False",  # workers may have children (crash isolation)
    "DASK_LOGGING__DISTRIBUTED": "error",  # no worker start-up chatter on the console
}


def enable_child_processes() -> None:
    import dask

    for key, value in CLUSTER_ENV.items():
        os.environ.setdefault(key, value)
    dask.config.refresh()


def local_cluster_kwargs(workers: int) -> dict[str, Any]:
    return {
        "n_workers": max(1, workers),
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        "silence_logs": logging.ERROR,
    }


def connect(address: str | None, workers: int) -> tuple[Any, list[Any]]:
    """(client, things to close): a client of the cluster at ``address``, or of a new LocalCluster."""
    from distributed import Client, LocalCluster

    enable_child_processes()
    if address:
        try:
            return Client(address, timeout="20s"), []
        except OSError as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    cluster = LocalCluster(**local_cluster_kwargs(workers))
    return Client(cluster), [cluster]
