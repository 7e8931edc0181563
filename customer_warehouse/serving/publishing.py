"""Publishing: a new version written from scratch beside the others, checked, made current.

Reads the warehouse (one DuckDB connection, read-only is enough; the tables the rules
publish) and the git revision of the code; writes ``versions/<id>.partial/`` (serving.duckdb
with the tables and the manifest, Parquet files, manifest.json), renames it to
``versions/<id>/`` and switches ``current`` (:mod:`customer_warehouse.serving.versions`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb

from customer_warehouse.config import PROJECT_DIR
from customer_warehouse.serving.rules import (
    MANIFEST_SCHEMA,
    PlannedTable,
    PublishRules,
    ServingError,
    _check_plan,
    fill_pseudonyms,
    plan_tables,
    quote_identifier,
    quote_table,
    sql_string,
)
from customer_warehouse.serving.versions import (
    DEFAULT_KEEP,
    DUCKDB_FILE,
    MANIFEST_FILE,
    PARTIAL_SUFFIX,
    VERSIONS_DIR,
    Version,
    _fsync_path,
    _fsync_tree,
    list_versions,
    new_version_id,
    prune,
    publish_lock,
    switch_to,
)
from customer_warehouse.warehouse import open_connection

PARQUET_DIR = "parquet"
MANIFEST_FORMAT = 1
CHECKSUM_METHOD = "sum(hash(row)) mod 2^64, hex; DuckDB hash, order-independent"


def git_revision(project_dir: Path | None = None) -> str | None:
    """The commit the code runs from (``-dirty`` when tracked files changed), or None."""
    try:
        proc = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40", "--exclude=*"],
            cwd=project_dir or PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


#: Row count and checksum of ``{table}`` (a table or a parenthesized subquery); docs/bi.md
#: shows the same query for readers who want to recompute it.
CHECKSUM_SQL = (
    "select count(*), printf('%016x', "
    "(coalesce(sum(hash(t)), 0) % 18446744073709551616)::ubigint) from {table} as t"
)


def table_checksum(con: duckdb.DuckDBPyConnection, table_sql: str) -> tuple[int, str]:
    """(rows, checksum) of a table or subquery: see the package docstring."""
    rows, checksum = con.execute(CHECKSUM_SQL.format(table=table_sql)).fetchone()
    return int(rows), checksum


def _write_tables(
    con: duckdb.DuckDBPyConnection, alias: str, target: Path, tables: Sequence[PlannedTable]
) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for planned in tables:
        schema, name = planned.name.split(".", 1)
        destination = f"{quote_identifier(alias)}.{quote_table(planned.name)}"
        select_list = ", ".join(
            f"{expression} as {quote_identifier(column)}"
            for column, expression in planned.columns.items()
        )
        con.execute(
            f"create schema if not exists {quote_identifier(alias)}.{quote_identifier(schema)}"
        )
        con.execute(
            f"create table {destination} as select {select_list} from {quote_table(planned.name)}"
        )
        parquet = Path(PARQUET_DIR) / schema / f"{name}.parquet"
        (target / parquet).parent.mkdir(parents=True, exist_ok=True)
        con.execute(
            f"copy (select * from {destination}) to {sql_string(target / parquet)} "
            "(format parquet, compression zstd)"
        )
        rows, checksum = table_checksum(con, destination)
        out[planned.name] = {
            "rows": rows,
            "checksum": checksum,
            "columns": list(planned.columns),
            "omitted_columns": list(planned.omitted),
            "parquet": parquet.as_posix(),
        }
    return out


def _write_manifest_tables(con: duckdb.DuckDBPyConnection, alias: str, manifest: dict) -> None:
    schema = f"{quote_identifier(alias)}.{MANIFEST_SCHEMA}"
    con.execute(f"create schema {schema}")
    con.execute(
        f"create table {schema}.version (version_id varchar, as_of_date date, "
        "built_at timestamptz, git_revision varchar, duckdb_version varchar, "
        "checksum_method varchar)"
    )
    con.execute(
        f"insert into {schema}.version values (?, ?, ?, ?, ?, ?)",
        [
            manifest["version"],
            manifest["as_of_date"],
            manifest["built_at"],
            manifest["git_revision"],
            manifest["duckdb_version"],
            manifest["checksum_method"],
        ],
    )
    con.execute(
        f"create table {schema}.tables (table_name varchar, row_count bigint, "
        "checksum varchar, parquet_path varchar, omitted_columns varchar[])"
    )
    for table, info in manifest["tables"].items():
        con.execute(
            f"insert into {schema}.tables values (?, ?, ?, ?, ?)",
            [table, info["rows"], info["checksum"], info["parquet"], info["omitted_columns"]],
        )


@contextmanager
def _warehouse_connection(
    warehouse: duckdb.DuckDBPyConnection | str | os.PathLike,
) -> Iterator[duckdb.DuckDBPyConnection]:
    if isinstance(warehouse, duckdb.DuckDBPyConnection):
        yield warehouse
        return
    con = open_connection(warehouse, read_only=True)
    try:
        yield con
    finally:
        con.close()


def _build_version(
    con: duckdb.DuckDBPyConnection,
    partial: Path,
    version_id: str,
    tables: Sequence[PlannedTable],
    as_of: date | None,
    git_rev: str | None,
    built_at: datetime,
) -> dict:
    alias = f"cw_serving_{version_id[-6:]}"
    con.execute(f"attach {sql_string(partial / DUCKDB_FILE)} as {alias} (read_only false)")
    try:
        written = _write_tables(con, alias, partial, tables)
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": version_id,
            "as_of_date": as_of.isoformat() if as_of else None,
            "built_at": built_at.isoformat().replace("+00:00", "Z"),
            "git_revision": git_rev,
            "duckdb_version": duckdb.__version__,
            "checksum_method": CHECKSUM_METHOD,
            "tables": written,
        }
        _write_manifest_tables(con, alias, manifest)
        con.execute(f"checkpoint {alias}")
    finally:
        con.execute(f"detach {alias}")
    (partial / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def publish(
    warehouse: duckdb.DuckDBPyConnection | str | os.PathLike,
    serving_dir: str | os.PathLike,
    tables: Sequence[PlannedTable] | None = None,
    *,
    keep: int = DEFAULT_KEEP,
    as_of: date | None = None,
    git_rev: str | None = None,
    rules: PublishRules | None = None,
    key: bytes | None = None,
) -> Version:
    """Publish a new version of the serving copy and make it current; prune old versions.

    ``warehouse``: an open connection (read-only is enough) or the warehouse file's path.
    ``tables``: what to publish; default :func:`plan_tables` under ``rules`` (the rules file).
    ``key``: the pseudonym key (``privacy.pii_key``), needed when a rule publishes an id as
    its pseudonym.
    Until the switch nothing a reader sees changes; on any error the partial folder is
    removed and ``current`` stays where it was.
    """
    if keep < 1:
        raise ServingError(f"keep must be at least 1, not {keep}.")
    serving_dir = Path(serving_dir)
    (serving_dir / VERSIONS_DIR).mkdir(parents=True, exist_ok=True)
    with publish_lock(serving_dir), _warehouse_connection(warehouse) as con:
        planned = list(tables) if tables is not None else plan_tables(con, rules)
        _check_plan(planned)
        fill_pseudonyms(con, planned, key)
        built_at = datetime.now(UTC)
        version_id = new_version_id(list_versions(serving_dir), built_at)
        partial = serving_dir / VERSIONS_DIR / f"{version_id}{PARTIAL_SUFFIX}"
        final = serving_dir / VERSIONS_DIR / version_id
        partial.mkdir()
        try:
            manifest = _build_version(con, partial, version_id, planned, as_of, git_rev, built_at)
            _fsync_tree(partial)
            os.rename(partial, final)
            _fsync_path(final.parent)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        switch_to(serving_dir, version_id)
        pruned, partials = prune(serving_dir, keep)
    return Version(version_id, final, manifest, tuple(pruned), tuple(partials))
