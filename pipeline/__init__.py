"""Seed documents -> normalized Parquet warehouse -> DuckDB catalog."""

__version__ = "0.1.0"
