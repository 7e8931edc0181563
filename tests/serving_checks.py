"""Checks on a published serving version, shared by tests/test_serving*.py and
tests/test_orchestration_full_build.py (the full build publishes one too)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import duckdb

from customer_warehouse import serving

PUBLISHABLE_SCHEMAS = {"marts", "seeds"}


def assert_nothing_personal(version_dir: Path) -> None:
    """No raw/staging/intermediate table and no column named like personal data, in the
    DuckDB file or any Parquet file of a published version."""
    with duckdb.connect(str(version_dir / serving.DUCKDB_FILE), read_only=True) as con:
        tables = dict(
            con.execute(
                "select table_schema || '.' || table_name, "
                "list(column_name order by ordinal_position) "
                "from information_schema.columns group by 1 order by 1"
            ).fetchall()
        )
    assert {t.split(".")[0] for t in tables} <= PUBLISHABLE_SCHEMAS | {serving.MANIFEST_SCHEMA}
    parquet = sorted((version_dir / serving.PARQUET_DIR).rglob("*.parquet"))
    assert parquet and {p.parent.name for p in parquet} <= PUBLISHABLE_SCHEMAS
    with duckdb.connect() as con:
        for path in parquet:
            described = con.execute("describe select * from read_parquet(?)", [str(path)])
            tables[f"parquet:{path.parent.name}.{path.stem}"] = [r[0] for r in described.fetchall()]
    offenders = [
        f"{table}.{column}"
        for table, columns in tables.items()
        for column in columns
        if column.lower() in serving.PERSONAL_COLUMNS
    ]
    assert offenders == []


def personal_values_found(version_dir: Path, values: Iterable[str]) -> list[str]:
    """Where any of ``values`` (e-mail addresses, phone numbers of the input) occurs as text
    in any table of the version's DuckDB file or any of its Parquet files."""
    wanted = {v for v in values if v}
    hits = []
    with duckdb.connect() as con:
        path = serving.sql_string(version_dir / serving.DUCKDB_FILE)
        con.execute(f"attach {path} as version (read_only)")
        sources = [
            f'version."{schema}"."{table}"'
            for schema, table in con.execute(
                "select table_schema, table_name from information_schema.tables "
                "where table_catalog = 'version'"
            ).fetchall()
        ]
        sources += [
            f"read_parquet({serving.sql_string(p)})"
            for p in sorted((version_dir / serving.PARQUET_DIR).rglob("*.parquet"))
        ]
        for source in sources:
            text = con.execute(
                f"select string_agg(cast(t as varchar), chr(10)) from {source} as t"
            ).fetchone()[0]
            hits += [f"{source}: {value}" for value in wanted if text and value in text]
    return hits


def content_mismatches(warehouse: Path, manifest: dict, key: bytes) -> list[str]:
    """Tables whose published columns in ``warehouse`` (ids as their pseudonyms under
    ``key``) do not have the manifest's rows and checksum; and tables the rules publish that
    the manifest lacks (or the reverse)."""
    problems = []
    with duckdb.connect(str(warehouse), read_only=True) as con:
        planned = {p.name: p for p in serving.plan_tables(con)}
        if set(planned) != set(manifest["tables"]):
            problems.append(f"tables {sorted(set(planned) ^ set(manifest['tables']))}")
        serving.fill_pseudonyms(con, list(planned.values()), key)
        for table, info in manifest["tables"].items():
            expressions = planned[table].columns if table in planned else {}
            quoted = serving.quote_identifier
            selected = ", ".join(
                f"{expressions.get(c, quoted(c))} as {quoted(c)}" for c in info["columns"]
            )
            got = serving.table_checksum(
                con, f"(select {selected} from {serving.quote_table(table)})"
            )
            if got != (info["rows"], info["checksum"]):
                problems.append(f"{table}: {got} != {(info['rows'], info['checksum'])}")
    return problems
