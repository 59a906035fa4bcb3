"""Read Delta tables with DuckDB 1.5.5's delta extension and print their rows as JSON (run in .venv-bi-s3).

argv[1]: a JSON object {"tables": {name: uri}, "timestamps": {name: [column, ...]}, "s3": {...} or null}.
Timestamps come out as epoch microseconds, so every reader's rows compare exactly.
"""

from __future__ import annotations

import json
import os
import sys

import duckdb


def extension(name: str) -> str:
    module = __import__(f"duckdb_extension_{name}")
    base = os.path.dirname(module.__file__)
    return os.path.join(base, "extensions", f"v{duckdb.__version__}", f"{name}.duckdb_extension")


def main() -> None:
    spec = json.loads(sys.argv[1])
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{extension('delta')}'")
    s3 = spec.get("s3")
    if s3:
        con.execute(f"LOAD '{extension('httpfs')}'")
        quoted = {k: "'" + str(v).replace("'", "''") + "'" for k, v in s3.items()}
        con.execute(
            f"CREATE SECRET warehouse (TYPE s3, KEY_ID {quoted['key']}, SECRET {quoted['secret']}, "
            f"REGION {quoted['region']}, ENDPOINT {quoted['endpoint']}, URL_STYLE 'path', USE_SSL false)"
        )
    out = {}
    for name, uri in spec["tables"].items():
        stamps = set(spec["timestamps"].get(name, []))
        cols = [r[0] for r in con.execute("DESCRIBE SELECT * FROM delta_scan(?)", [uri]).fetchall()]
        select = ", ".join(f'epoch_us("{c}")' if c in stamps else f'"{c}"' for c in cols)
        rows = con.execute(f"SELECT {select} FROM delta_scan(?)", [uri]).fetchall()
        out[name] = {"columns": cols, "rows": [list(r) for r in rows]}
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
