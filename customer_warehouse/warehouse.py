"""Warehouse plumbing shared by every Python step: open the DuckDB file, look tables up, read
the as-of date, run work in one transaction and replace tables atomically.

Reads and writes nothing by itself. Every module that touches the warehouse file goes through
here, so a connection always carries the configured memory limit and temp folder, and "the
as-of date" always means ``intermediate.int_as_of_date`` (decided once by dbt).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

AS_OF_TABLE = "intermediate.int_as_of_date"

# Arrow types the Python steps write, as DuckDB column types (for `create table` statements).
DUCKDB_TYPES: Mapping[pa.DataType, str] = {
    pa.string(): "varchar",
    pa.int32(): "integer",
    pa.int64(): "bigint",
    pa.float64(): "double",
    pa.bool_(): "boolean",
    pa.date32(): "date",
    pa.timestamp("us"): "timestamp",
}


def open_connection(
    path: str | Path,
    *,
    read_only: bool = False,
    config: Mapping[str, str] | None = None,
) -> duckdb.DuckDBPyConnection:
    """A connection to the warehouse file (``":memory:"`` works too); the caller closes it. A
    writer creates the file's folder first; ``config`` is ``Settings.duckdb_config`` (memory
    limit, temp folder)."""
    if not read_only and str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(path), read_only=read_only, config=dict(config or {}))


@contextmanager
def connect(
    path: str | Path,
    *,
    read_only: bool = False,
    config: Mapping[str, str] | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """:func:`open_connection`, closed when the block ends."""
    con = open_connection(path, read_only=read_only, config=config)
    try:
        yield con
    finally:
        con.close()


def quote_table(table: str) -> str:
    """``schema.table`` → ``"schema"."table"``."""
    return ".".join(f'"{part}"' for part in table.split("."))


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> Any:
    """The first value of a query's result, which is read to the end (DuckDB refuses other work
    on a connection whose last result is only partly fetched)."""
    rows = con.execute(sql, list(params)).fetchall()
    return rows[0][0] if rows else None


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether ``schema.table`` (a table or a view) exists in the current database."""
    schema, name = table.split(".", 1)
    return bool(
        scalar(
            con,
            "select count(*) from information_schema.tables "
            "where table_catalog = current_database() and table_schema = ? and table_name = ?",
            [schema, name],
        )
    )


def require_tables(con: duckdb.DuckDBPyConnection, tables: Sequence[str], fix: str) -> None:
    """Fail with one message naming every missing table and what to do about it."""
    missing = [table for table in tables if not table_exists(con, table)]
    if missing:
        raise LookupError(f"Table(s) {', '.join(missing)} not found in the warehouse: {fix}.")


def read_as_of_date(con: duckdb.DuckDBPyConnection, *, required: bool = True) -> date | None:
    """The warehouse's as-of date, decided once by the dbt model ``int_as_of_date``. When the
    model has not been built: a LookupError saying so, or None with ``required=False``."""
    if not table_exists(con, AS_OF_TABLE):
        if not required:
            return None
        raise LookupError(f"{AS_OF_TABLE} not found: run the dbt models first.")
    value = scalar(con, f"select max(as_of_date) from {AS_OF_TABLE}")
    if value is None and required:
        raise LookupError(f"{AS_OF_TABLE} is empty: run the dbt models first.")
    return value


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All or nothing: commit when the block ends, roll back when it raises."""
    con.begin()
    try:
        yield con
    except BaseException:
        con.rollback()
        raise
    con.commit()


def replace_tables(con: duckdb.DuckDBPyConnection, frames: Mapping[str, pd.DataFrame]) -> None:
    """Replace each ``schema.table`` by its DataFrame (or Arrow table), all in one transaction:
    a reader sees every old table or every new one, never a mix."""
    for schema in sorted({table.split(".", 1)[0] for table in frames}):
        con.execute(f'create schema if not exists "{schema}"')
    with transaction(con):
        for table, frame in frames.items():
            con.register("_cw_frame", frame)
            try:
                target = quote_table(table)
                con.execute(f"create or replace table {target} as select * from _cw_frame")
            finally:
                con.unregister("_cw_frame")
