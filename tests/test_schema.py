"""Everything derives from pipeline/schema.py: Parquet files, DuckDB views, comments, README and docs."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from pipeline import cli, docs, schema

from .conftest import REPO, open_catalog


def test_parquet_files_carry_the_declared_arrow_schema(load, warehouse: Path) -> None:
    load()
    current = warehouse / "current"
    for table in schema.TABLES:
        files = sorted((current / table.name).glob("*.parquet"))
        assert files, table.name
        for f in files:
            got = pq.read_schema(f)
            want = table.arrow_schema()
            assert got.names == want.names, f
            assert got.types == want.types, f
            assert [fld.nullable for fld in got] == [fld.nullable for fld in want], f


def test_duckdb_views_types_and_comments_come_from_schema(load, warehouse: Path) -> None:
    load()
    con = open_catalog(warehouse)
    try:
        for table in schema.TABLES:
            cols = con.execute(
                "SELECT column_name, data_type, comment FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index",
                [table.name],
            ).fetchall()
            assert [c[0] for c in cols] == table.column_names
            assert [c[1] for c in cols] == [schema.DUCKDB_TYPES[c.type] for c in table.columns]
            assert [c[2] for c in cols] == [c.description for c in table.columns]
            (comment,) = con.execute("SELECT comment FROM duckdb_views() WHERE view_name = ?", [table.name]).fetchone()
            assert table.grain in comment and table.description in comment
    finally:
        con.close()


def test_readme_table_list_is_generated_from_schema() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert docs.readme_block() in readme, "README table list is stale: run `pipeline docs`"
    for table in schema.TABLES:
        assert f"| `{table.name}` | {table.grain} |" in readme


def test_readme_example_queries_match_the_tested_file() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    sql = (REPO / "docs" / docs.EXAMPLES_FILE).read_text(encoding="utf-8")
    assert docs.examples_block(sql) in readme, "README example queries are stale: run `pipeline docs`"


def test_committed_docs_are_up_to_date() -> None:
    assert (REPO / "docs" / "data-dictionary.md").read_text(encoding="utf-8") == docs.data_dictionary(), (
        "docs/data-dictionary.md is stale: run `pipeline docs`"
    )
    assert (REPO / "docs" / "erd.md").read_text(encoding="utf-8") == docs.er_diagram(), (
        "docs/erd.md is stale: run `pipeline docs`"
    )
    assert (REPO / "docs" / "rejects.md").read_text(encoding="utf-8") == docs.rejects_reference(), (
        "docs/rejects.md is stale: run `pipeline docs`"
    )


def test_every_table_declares_grain_key_and_existing_key_columns() -> None:
    for table in schema.TABLES:
        assert table.grain.startswith("one row per")
        assert set(table.key) <= set(table.column_names)
        for k in table.key:
            assert not table.column(k).nullable
        if table.parent:
            assert set(table.parent_key) <= set(table.column_names)


def test_readme_command_table_is_generated_from_the_cli_parser() -> None:
    """sqlite-utils style: the README lists every command and option the parser has (`pipeline docs` writes it)."""
    import argparse

    from pipeline.cli import build_parser

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert docs.commands_block(cli.command_docs()) in readme, "README command table is stale: run `pipeline docs`"
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, cmd in sub.choices.items():
        assert f"`pipeline {name}" in readme, name
        assert cmd.description, f"pipeline {name} has no description"
        for action in cmd._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert f"`{option}`" in readme, f"pipeline {name} {option} is not in the README"
