"""Runs in .venv-bi-s3 (DuckDB 1.5.5 + httpfs): read a warehouse on S3 the way a BI tool would.

    python s3_probe.py ENDPOINT CATALOG_URL TABLE[,TABLE...]

ENDPOINT is host:port of the S3 server; keys come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
Prints JSON: row counts per view through (1) a plain DuckDB client that ATTACHes the catalog
straight from S3, and (2) SQLAlchemy + duckdb_engine with the same set-up in a connect hook.
"""

import importlib.util
import json
import os
import sys
import tempfile

import duckdb
import pandas as pd
from sqlalchemy import create_engine, event, inspect, text

endpoint, catalog, tables = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
# httpfs from the duckdb-extension-httpfs wheel, loaded by path (no download).
package = os.path.dirname(importlib.util.find_spec("duckdb_extension_httpfs").origin)
HTTPFS = os.path.join(package, "extensions", f"v{duckdb.__version__}", "httpfs.duckdb_extension")
SETUP = [
    f"LOAD '{HTTPFS}'",
    f"""CREATE SECRET warehouse_s3 (TYPE s3, KEY_ID '{os.environ["AWS_ACCESS_KEY_ID"]}',
        SECRET '{os.environ["AWS_SECRET_ACCESS_KEY"]}', REGION '{os.environ.get("AWS_REGION", "us-east-1")}',
        ENDPOINT '{endpoint}', URL_STYLE 'path', USE_SSL false)""",
    f"ATTACH '{catalog}' AS warehouse (READ_ONLY)",
    "USE warehouse",
]
out = {"duckdb": duckdb.__version__}

# (1) A DuckDB client: four statements, then plain SQL over the views.
con = duckdb.connect(config={"extension_directory": tempfile.mkdtemp()})  # nothing from ~/.duckdb
for stmt in SETUP:
    con.execute(stmt)
out["duckdb_counts"] = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
out["snapshot"] = con.execute("SELECT snapshot_id FROM pipeline_snapshot").fetchone()[0]
out["top_provider"] = con.execute(
    "SELECT provider_name, count(*) FROM article_facts GROUP BY ALL ORDER BY 2 DESC, 1 LIMIT 1"
).fetchall()[0]
con.close()

# (2) SQLAlchemy + duckdb_engine, as Superset/Metabase-style tools connect: the same set-up per connection.
engine = create_engine("duckdb:///:memory:")


@event.listens_for(engine, "connect")
def _connect(dbapi_connection, _record):
    for stmt in SETUP:
        dbapi_connection.execute(stmt)


with engine.connect() as conn:
    out["sqlalchemy_counts"] = {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar() for t in tables}
out["sqlalchemy_views"] = sorted(inspect(engine).get_view_names())
out["pandas_rows"] = len(pd.read_sql(text("SELECT * FROM articles"), engine))
engine.dispose()
print(json.dumps(out))
