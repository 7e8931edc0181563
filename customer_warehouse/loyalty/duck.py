"""DuckDB helpers of the ledger: statements with named parameters, results as Arrow, timestamp
columns as UTC, and a timer of the run's phases.

Reads only what the caller's SQL reads (and ``information_schema`` for a column's type);
writes nothing by itself. Connections, transactions and table look-ups are
``customer_warehouse.warehouse``'s.
"""

from __future__ import annotations

import re
import time as clock

import duckdb
import pyarrow as pa


def _used(sql: str, params: dict) -> dict:
    """The named parameters ``sql`` uses (DuckDB refuses unused ones)."""
    used = set(re.findall(r"\$([a-z_]+)", sql))
    return {name: value for name, value in params.items() if name in used}


def run_sql(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> duckdb.DuckDBPyConnection:
    """Run ``sql`` with the named parameters it uses."""
    return con.execute(sql, _used(sql, params))


def arrow(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> pa.Table:
    """A query's result as an Arrow table (no row-by-row copy)."""
    return con.sql(sql, params=_used(sql, params) or None).to_arrow_table()


def utc(con: duckdb.DuckDBPyConnection, table: str, column: str) -> str:
    """The column as a UTC TIMESTAMP: TIMESTAMP columns are UTC already (the staging contract);
    a TIMESTAMP WITH TIME ZONE column is converted, whatever the session's time zone."""
    schema, name = table.split(".", 1)
    row = con.execute(
        "select data_type from information_schema.columns "
        "where table_schema = ? and table_name = ? and column_name = ?",
        [schema, name, column],
    ).fetchone()
    if row is not None and "TIME ZONE" in row[0].upper():
        return f"({column} at time zone 'UTC')"
    return f"cast({column} as timestamp)"


class Timer:
    """Seconds per phase, into the report (``with timer("gather"): ...``)."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self._seconds = seconds

    def __call__(self, name: str) -> Timer:
        self._name = name
        return self

    def __enter__(self) -> None:
        self._started = clock.perf_counter()

    def __exit__(self, *_exc: object) -> None:
        self._seconds[self._name] = clock.perf_counter() - self._started
