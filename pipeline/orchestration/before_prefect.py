"""Imported for its effect, before Prefect: this project's Prefect defaults go into the environment.

Prefect reads its settings when it is imported, so a module that imports Prefect at module level
(``flow.py``) imports this first. It makes the one call, ``prefect_env.apply_defaults()`` (no analytics,
a quiet console; a variable the user set wins). The CLI makes the same call itself, with ``--debug``,
before it imports ``flow``; this covers Prefect loading ``flow.py`` on its own (deployments, workers).
"""

from __future__ import annotations

from pipeline.orchestration import prefect_env

prefect_env.apply_defaults()
