"""Open warehouse/catalog.duckdb the way a BI tool does (SQLAlchemy + duckdb_engine, read-only) and print JSON.

Runs in the BI venv (tests/bi/requirements.txt), not the project's: it imports nothing from the
pipeline package. By hand:

    .venv-bi/bin/python tests/bi/sqlalchemy_probe.py "$PWD/warehouse/catalog.duckdb"

Prints one JSON object: library versions, what reflection lists (tables, views, their columns with
types and comments), whether a write is refused, and the result of a query run through
pandas.read_sql (by default: articles joined to providers, count per provider), and the rows of
any --queries given (tests/test_bi_clients.py runs it under TZ=America/New_York).
"""

from __future__ import annotations

import argparse
import datetime
import json
import warnings
from typing import Any

import duckdb
import duckdb_engine
import pandas as pd
import sqlalchemy as sa

DEFAULT_SQL = """
SELECT p.name AS provider, count(*) AS articles
FROM articles a JOIN providers p ON p.provider_id = a.provider_id
GROUP BY p.name
ORDER BY articles DESC, provider
"""


def python_type(type_: sa.types.TypeEngine[Any]) -> str | None:
    """What a BI tool infers from a reflected type; None for types the dialect did not recognize."""
    try:
        return type_.python_type.__name__
    except NotImplementedError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("catalog", help="absolute path of catalog.duckdb")
    parser.add_argument("--sql", default=DEFAULT_SQL, help="query to run through pandas.read_sql")
    parser.add_argument(
        "--queries",
        default="{}",
        help='JSON object {"name": "SQL", ...}: run each through SQLAlchemy, rows printed under "queries"',
    )
    args = parser.parse_args()

    out: dict[str, Any] = {
        "versions": {
            "sqlalchemy": sa.__version__,
            "duckdb_engine": duckdb_engine.__version__,
            "duckdb": duckdb.__version__,
            "pandas": pd.__version__,
        }
    }
    engine = sa.create_engine(f"duckdb:///{args.catalog}", connect_args={"read_only": True})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        insp = sa.inspect(engine)
        out["table_names"] = insp.get_table_names()
        out["view_names"] = insp.get_view_names()
        columns: dict[str, list[dict[str, Any]]] = {}
        comments: dict[str, str | None] = {}
        for name in [*out["table_names"], *out["view_names"]]:
            columns[name] = [
                {
                    "name": c["name"],
                    "type": repr(c["type"]),
                    "python_type": python_type(c["type"]),
                    "nullable": c["nullable"],
                    "comment": c.get("comment"),
                }
                for c in insp.get_columns(name)
            ]
            comments[name] = insp.get_table_comment(name)["text"]
        out["columns"] = columns
        out["comments"] = comments
        # What Table(..., autoload_with=engine) and dataset editors do.
        meta = sa.MetaData()
        meta.reflect(engine, views=True)
        out["reflected"] = sorted(meta.tables)

        frame = pd.read_sql(args.sql, engine)
        out["read_sql"] = {
            "columns": list(frame.columns),
            "dtypes": {c: str(t) for c, t in frame.dtypes.items()},
            "rows": json.loads(frame.to_json(orient="records", date_format="iso")),
        }
        facts = pd.read_sql("SELECT * FROM article_facts", engine)
        out["article_facts_dtypes"] = {c: str(t) for c, t in facts.dtypes.items()}
        out["article_facts_rows"] = len(facts)
        out["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught})

    # Extra queries; dates and date-times as str() gives them (an offset only when they carry one).
    out["queries"] = {}
    with engine.connect() as conn:
        for name, sql in json.loads(args.queries).items():
            result = conn.exec_driver_sql(sql)
            out["queries"][name] = {
                "columns": list(result.keys()),
                "rows": [[str(v) if isinstance(v, datetime.date) else v for v in row] for row in result],
            }

    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE probe_write (x INTEGER)")
        out["write_refused"] = None
    except sa.exc.DBAPIError as exc:
        out["write_refused"] = str(exc.orig).splitlines()[0]
    engine.dispose()
    print(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
