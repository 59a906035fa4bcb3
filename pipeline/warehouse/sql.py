"""SQL text built from our own values (paths, ids, names): quoting in one place.

User SQL never goes through here; `pipeline query` passes it to DuckDB unchanged and
refuses anything but read-only statements.
"""

from __future__ import annotations

from collections.abc import Iterable


def literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def file_list(paths: Iterable[str]) -> str:
    """A DuckDB list of file paths or URLs, e.g. for ``read_parquet([...])``."""
    return "[" + ", ".join(literal(p) for p in paths) + "]"
