"""The serving copy: what BI tools and Parquet readers may read, published atomically.

Reads the warehouse (one DuckDB connection, read-only is enough) and writes ``serving_dir``
(``CW_SERVING_DIR``, default ``serving/`` beside the warehouse file, i.e. ``data/serving/``)::

    serving_dir/
      current -> versions/<id>      symlink, switched atomically (os.replace of a new symlink)
      CURRENT                       "<id>\\n", written temp + rename (for tools without symlinks)
      .publish.lock                 held (flock) while a publish runs; released if it dies
      versions/<id>/
        serving.duckdb              every published table as <schema>.<table>, plus the manifest
                                    as tables manifest.version and manifest.tables
        parquet/<schema>/<table>.parquet
        manifest.json               as-of date, build time, git revision, per table: rows,
                                    checksum, columns, columns left out

**What is published** is decided in one place, ``serving_tables.csv`` beside this module
(:func:`load_rules`): a row per schema (``*``), table or column with ``publish`` yes/no and why.
The most specific row wins; anything no row names is not published; ``raw``, ``staging`` and
``intermediate`` can never be published (a ``yes`` for them is an error). Which columns of a
published table leave, and as what, is decided by :func:`published_columns` (the hook for
column transforms such as keyed pseudonyms); a column named like personal data
(:data:`PERSONAL_COLUMNS`) stops the publish.

**Publishing** (:func:`publish`) writes ``versions/<id>.partial/`` from scratch (ATTACH + CREATE
TABLE AS, COPY ... TO parquet, the manifest), fsyncs it, renames it to ``versions/<id>/`` and
then switches ``current`` and ``CURRENT``. A reader that already opened a version keeps reading
it, also after it is pruned (POSIX keeps an open file alive). Only the newest ``keep`` versions
are kept, never removing the current one; ``.partial`` folders of a killed publish are removed
by the next one (a version killed after its rename but before the switch is complete, never
current, and pruned in its turn). A failure before the switch leaves ``current`` where it was.

**Version ids** sort by time and are unique: ``YYYYMMDDTHHMMSS.ffffffZ-<6 hex>`` (UTC), and a
new id is always later than every existing one (the clock is bumped if needed).

**Checksum** of a table: ``sum(hash(row))`` over the published table, modulo 2**64, as 16 hex
digits. Order-independent (a sum), duplicate rows count (unlike xor), identical for identical
content with the same DuckDB version (the manifest records it; DuckDB's ``hash`` is not
promised stable across versions). Row count and checksum are the table's fingerprint. It is
computed on ``serving.duckdb``; the Parquet file has the same rows (Parquet may widen a type,
e.g. HUGEINT to DOUBLE, so recompute checksums on the DuckDB file).
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa

from customer_warehouse import privacy
from customer_warehouse.config import DEFAULT_SERVING_KEEP, PROJECT_DIR
from customer_warehouse.warehouse import open_connection

RULES_FILE = Path(__file__).resolve().with_name("serving_tables.csv")
#: Schemas that never leave the warehouse, whatever the rules file says.
NEVER_PUBLISHED = frozenset({"raw", "staging", "intermediate"})
#: A published column with one of these names stops the publish: the one list,
#: seeds/personal_columns.csv (customer_warehouse.privacy).
PERSONAL_COLUMNS = privacy.personal_columns()
#: ``publish`` value of a column rule: the column becomes its keyed pseudonym.
PSEUDONYM = "pseudonym"
#: Temp table of (id, pseudonym) a publish fills once per distinct id (docs/privacy.md).
PSEUDONYM_TABLE = "cw_pseudonyms"
DEFAULT_KEEP = DEFAULT_SERVING_KEEP
DUCKDB_FILE = "serving.duckdb"
MANIFEST_FILE = "manifest.json"
PARQUET_DIR = "parquet"
VERSIONS_DIR = "versions"
CURRENT_LINK = "current"
CURRENT_FILE = "CURRENT"
LOCK_FILE = ".publish.lock"
PARTIAL_SUFFIX = ".partial"
#: Schema of the manifest inside serving.duckdb (one read sees data and manifest together).
MANIFEST_SCHEMA = "manifest"
MANIFEST_FORMAT = 1
CHECKSUM_METHOD = "sum(hash(row)) mod 2^64, hex; DuckDB hash, order-independent"
VERSION_RE = re.compile(r"^(\d{8}T\d{6}\.\d{6}Z)-([0-9a-f]{6})$")
_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
#: How long a publish waits for another one (a second Dagster instance on the same folder).
LOCK_TIMEOUT_SECONDS = 600.0


class ServingError(RuntimeError):
    """The serving copy cannot be published as asked; the message says what to change."""


# --------------------------------------------------------------------------------------------
# What is published
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    schema: str
    table: str  # a table name or "*"
    column: str  # a column name or "" (the whole table)
    publish: bool
    why: str
    pseudonym: bool = False  # a column published as its keyed pseudonym (…_id → …_key)


@dataclass(frozen=True)
class PublishRules:
    """The rows of ``serving_tables.csv``; ask :meth:`publishes` and :meth:`excluded_columns`."""

    rules: tuple[Rule, ...]

    def publishes(self, table: str) -> bool:
        """True when ``schema.table`` is published (with at least its non-excluded columns)."""
        schema, name = table.split(".", 1)
        if schema in NEVER_PUBLISHED:
            return False
        table_rules = [r for r in self.rules if not r.column and r.schema == schema]
        exact = [r for r in table_rules if r.table == name]
        wildcard = [r for r in table_rules if r.table == "*"]
        chosen = exact or wildcard
        return bool(chosen) and chosen[-1].publish

    def publishes_schema(self, schema: str) -> bool:
        """True when some table of ``schema`` may be published (for the asset's deps)."""
        return schema not in NEVER_PUBLISHED and any(
            r.schema == schema and not r.column and r.publish for r in self.rules
        )

    def excluded_columns(self, table: str) -> dict[str, str]:
        """{column: why} of the columns of ``schema.table`` that are not published."""
        schema, name = table.split(".", 1)
        return {
            r.column.lower(): r.why
            for r in self.rules
            if r.column
            and not r.publish
            and not r.pseudonym
            and r.schema == schema
            and r.table in (name, "*")
        }

    def pseudonym_columns(self, table: str) -> set[str]:
        """The id columns of ``schema.table`` published as their keyed pseudonym."""
        schema, name = table.split(".", 1)
        return {
            r.column.lower()
            for r in self.rules
            if r.pseudonym and r.schema == schema and r.table in (name, "*")
        }


def load_rules(path: Path = RULES_FILE) -> PublishRules:
    """Read and check the rules file (columns ``schema,table,column,publish,why``)."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        expected = ["schema", "table", "column", "publish", "why"]
        if reader.fieldnames != expected:
            raise ServingError(f"{path}: the header must be {','.join(expected)}.")
        rules = []
        for line, row in enumerate(reader, start=2):
            flag = (row["publish"] or "").strip().lower()
            if flag not in ("yes", "no", PSEUDONYM):
                raise ServingError(
                    f"{path}, line {line}: publish must be yes, no or {PSEUDONYM}, not {flag!r}."
                )
            rule = Rule(
                schema=row["schema"].strip(),
                table=row["table"].strip() or "*",
                column=(row["column"] or "").strip(),
                publish=flag == "yes",
                why=(row["why"] or "").strip(),
                pseudonym=flag == PSEUDONYM,
            )
            if rule.pseudonym and not rule.column.endswith("_id"):
                raise ServingError(
                    f"{path}, line {line}: only an id column (…_id) can be published as a "
                    f"{PSEUDONYM}; it becomes …_key (docs/privacy.md)."
                )
            if not rule.schema or not rule.why:
                raise ServingError(f"{path}, line {line}: every rule needs a schema and a why.")
            if rule.publish and rule.schema in NEVER_PUBLISHED:
                raise ServingError(
                    f"{path}, line {line}: schema {rule.schema} is never published (raw, "
                    "staging and intermediate hold personal data and unchecked rows); publish "
                    "a mart built on it instead."
                )
            if rule.column and rule.publish:
                raise ServingError(
                    f"{path}, line {line}: a column rule can only leave a column out "
                    f"(publish no) or replace it by its {PSEUDONYM}; a published table "
                    "publishes its other columns."
                )
            rules.append(rule)
    return PublishRules(tuple(rules))


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_table(table: str) -> str:
    """``schema.table`` -> ``"schema"."table"``."""
    schema, name = table.split(".", 1)
    return f"{quote_identifier(schema)}.{quote_identifier(name)}"


def sql_string(value: str | os.PathLike) -> str:
    """A SQL string literal (DuckDB cannot take a parameter in ATTACH or COPY ... TO)."""
    return "'" + str(value).replace("'", "''") + "'"


def published_columns(
    table: str, columns: Sequence[str], rules: PublishRules | None = None
) -> dict[str, str]:
    """{published column name: SQL expression over the warehouse table} for one table.

    The one place that decides what a column of a published table becomes in the serving copy.
    Today a column is either copied as it is (expression = the quoted column) or left out (a
    ``publish=no`` column rule in ``serving_tables.csv``, e.g. ``crm_reminders.contact_address``).
    A transform goes here too: map a column to another expression or name (a keyed pseudonym
    instead of an id, an age band instead of a birth date); the expression may use any column
    of ``table``. :func:`publish` refuses output names in :data:`PERSONAL_COLUMNS`.
    """
    rules = rules or load_rules()
    excluded = rules.excluded_columns(table)
    pseudonyms = rules.pseudonym_columns(table)
    chosen: dict[str, str] = {}
    for column in columns:
        if column.lower() in excluded:
            continue
        if column.lower() in pseudonyms:
            source = f"{quote_table(table)}.{quote_identifier(column)}"
            chosen[column[: -len("_id")] + "_key"] = (
                f"(select pseudonyms.pseudonym from {PSEUDONYM_TABLE} as pseudonyms "
                f"where pseudonyms.id = {source})"
            )
        else:
            chosen[column] = quote_identifier(column)
    return chosen


@dataclass(frozen=True)
class PlannedTable:
    """One table to publish: ``schema.table`` and {output column: SQL expression}."""

    name: str
    columns: Mapping[str, str]
    omitted: tuple[str, ...] = ()
    #: Id columns of the warehouse table published as their pseudonym (…_id → …_key).
    pseudonymized: tuple[str, ...] = ()


def plan_tables(
    con: duckdb.DuckDBPyConnection, rules: PublishRules | None = None
) -> list[PlannedTable]:
    """Every table and view of the warehouse that the rules publish, with its columns."""
    rules = rules or load_rules()
    rows = con.execute(
        "select table_schema, table_name from information_schema.tables "
        "where table_catalog = current_database() order by 1, 2"
    ).fetchall()
    planned = []
    for schema, name in rows:
        table = f"{schema}.{name}"
        if not rules.publishes(table):
            continue
        columns = [
            row[0]
            for row in con.execute(
                "select column_name from information_schema.columns where table_catalog = "
                "current_database() and table_schema = ? and table_name = ? "
                "order by ordinal_position",
                [schema, name],
            ).fetchall()
        ]
        chosen = published_columns(table, columns, rules)
        pseudonymized = tuple(c for c in columns if c.lower() in rules.pseudonym_columns(table))
        omitted = tuple(c for c in columns if c not in chosen and c not in pseudonymized)
        planned.append(PlannedTable(table, chosen, omitted, pseudonymized))
    return planned


def fill_pseudonyms(
    con: duckdb.DuckDBPyConnection, tables: Sequence[PlannedTable], key: bytes | None
) -> None:
    """The temp table ``cw_pseudonyms`` (id, pseudonym): one HMAC per distinct id of every
    pseudonymized column, so a 10-million-row ledger costs a join, not 10 million HMACs."""
    sources = [
        f"select {quote_identifier(column)} as id from {quote_table(planned.name)}"
        for planned in tables
        for column in planned.pseudonymized
    ]
    con.execute(f"create or replace temp table {PSEUDONYM_TABLE} (id varchar, pseudonym varchar)")
    if not sources:
        return
    if key is None:
        raise ServingError(
            "The rules publish ids as pseudonyms, but no pseudonym key was given (CW_PII_KEY; "
            "docs/privacy.md)."
        )
    ids = [
        value
        for (value,) in con.execute(
            f"select distinct cast(id as varchar) from ({' union all '.join(sources)}) "
            "where id is not null"
        ).fetchall()
    ]
    rows = pa.table({"id": ids, "pseudonym": [privacy.pseudonym(key, value) for value in ids]})
    con.register("cw_pseudonym_rows", rows)
    try:
        con.execute(f"insert into {PSEUDONYM_TABLE} select id, pseudonym from cw_pseudonym_rows")
    finally:
        con.unregister("cw_pseudonym_rows")


def _check_plan(tables: Sequence[PlannedTable]) -> None:
    if not tables:
        raise ServingError(
            "Nothing to publish: the warehouse has no table the rules publish "
            "(customer_warehouse/serving_tables.csv). Build the warehouse first (make run)."
        )
    for planned in tables:
        schema = planned.name.split(".", 1)[0]
        if schema in NEVER_PUBLISHED or schema == MANIFEST_SCHEMA:
            raise ServingError(f"{planned.name}: schema {schema} is never published.")
        personal = sorted(c for c in planned.columns if c.lower() in PERSONAL_COLUMNS)
        if personal:
            raise ServingError(
                f"{planned.name} would publish personal data ({', '.join(personal)}). Leave "
                "the column out with a publish=no row in customer_warehouse/serving_tables.csv "
                "or transform it in customer_warehouse.serving.published_columns."
            )


# --------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableManifest:
    rows: int
    checksum: str
    columns: list[str]
    omitted_columns: list[str]
    parquet: str


@dataclass(frozen=True)
class Version:
    """A published version: its id, folder and manifest (as written to manifest.json)."""

    id: str
    path: Path
    manifest: dict = field(hash=False)
    pruned: tuple[str, ...] = ()
    removed_partials: tuple[str, ...] = ()

    @property
    def duckdb_path(self) -> Path:
        return self.path / DUCKDB_FILE

    @property
    def tables(self) -> dict[str, dict]:
        return self.manifest["tables"]


def _time_of(version_id: str) -> datetime:
    return datetime.strptime(VERSION_RE.match(version_id).group(1), _TIME_FORMAT).replace(
        tzinfo=UTC
    )


def new_version_id(existing: Sequence[str] = (), now: datetime | None = None) -> str:
    """``YYYYMMDDTHHMMSS.ffffffZ-<6 hex>``, later than every id in ``existing``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    if existing:
        latest = _time_of(max(existing))
        if moment <= latest:  # a clock that went back, or two publishes in one microsecond
            moment = latest + timedelta(microseconds=1)
    return f"{moment.strftime(_TIME_FORMAT)}-{secrets.token_hex(3)}"


def list_versions(serving_dir: Path) -> list[str]:
    """Ids of the complete versions in ``serving_dir``, oldest first."""
    folder = Path(serving_dir) / VERSIONS_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if VERSION_RE.match(p.name) and p.is_dir())


def current_version(serving_dir: Path) -> str | None:
    """The id ``current`` points at (the ``CURRENT`` file if there is no symlink), or None."""
    serving_dir = Path(serving_dir)
    link = serving_dir / CURRENT_LINK
    if link.is_symlink():
        return Path(os.readlink(link)).name
    pointer = serving_dir / CURRENT_FILE
    if pointer.is_file():
        return pointer.read_text(encoding="utf-8").strip() or None
    return None


def read_manifest(serving_dir: Path, version_id: str | None = None) -> dict:
    """The manifest of a version (default: the current one)."""
    version_id = version_id or current_version(serving_dir)
    if version_id is None:
        raise ServingError(f"{serving_dir} has no current version; nothing was published yet.")
    path = Path(serving_dir) / VERSIONS_DIR / version_id / MANIFEST_FILE
    return json.loads(path.read_text(encoding="utf-8"))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            _fsync_path(Path(folder) / name)
        _fsync_path(Path(folder))


def _replace_atomically(serving_dir: Path, name: str, make_temp) -> None:
    temp = serving_dir / f".{name}.tmp-{secrets.token_hex(4)}"
    make_temp(temp)
    target = serving_dir / name
    if target.is_dir() and not target.is_symlink():
        # A copy of the folder that followed the link (`cp -r`, a backup restored) left a real
        # folder where the link belongs: set it aside, then switch as usual.
        aside = serving_dir / f".{name}.replaced-{secrets.token_hex(4)}"
        os.rename(target, aside)
        shutil.rmtree(aside, ignore_errors=True)
    os.replace(temp, target)


def switch_to(serving_dir: Path, version_id: str) -> None:
    """Make ``version_id`` current: the ``current`` symlink, then the ``CURRENT`` file.

    Each is replaced in one step (a new symlink / file renamed over the old one), so a reader
    finds either the old or the new version, never none. Also the way to roll back by hand.
    """
    serving_dir = Path(serving_dir)
    if not (serving_dir / VERSIONS_DIR / version_id / MANIFEST_FILE).is_file():
        raise ServingError(f"{serving_dir}: there is no complete version {version_id}.")

    def symlink(temp: Path) -> None:
        os.symlink(Path(VERSIONS_DIR) / version_id, temp)

    def pointer(temp: Path) -> None:
        with temp.open("w", encoding="utf-8") as handle:
            handle.write(version_id + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    _replace_atomically(serving_dir, CURRENT_LINK, symlink)
    _replace_atomically(serving_dir, CURRENT_FILE, pointer)
    _fsync_path(serving_dir)


def prune(serving_dir: Path, keep: int) -> tuple[list[str], list[str]]:
    """Remove all but the newest ``keep`` versions (never the current one), every stale
    ``.partial`` folder and leftover temp links. Call it only while holding the publish lock.
    Returns (pruned version ids, removed partial folders)."""
    serving_dir = Path(serving_dir)
    versions = list_versions(serving_dir)
    current = current_version(serving_dir)
    kept = set(versions[-keep:]) | {current}
    pruned = [v for v in versions if v not in kept]
    folder = serving_dir / VERSIONS_DIR
    for version_id in pruned:
        shutil.rmtree(folder / version_id)
    partials = sorted(p.name for p in folder.iterdir() if p.name.endswith(PARTIAL_SUFFIX))
    for name in partials:
        shutil.rmtree(folder / name, ignore_errors=True)
    for temp in serving_dir.glob(".*.tmp-*"):
        temp.unlink(missing_ok=True)
    return pruned, partials


@contextmanager
def publish_lock(serving_dir: Path, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """One publish at a time per folder. The kernel drops the lock when its holder dies, so a
    killed publish never blocks the next; a live one is waited for, at most ``timeout`` s."""
    path = Path(serving_dir) / LOCK_FILE
    with path.open("a+", encoding="utf-8") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    raise ServingError(
                        f"Another publish into {serving_dir} (process {holder}) has held the "
                        f"lock for {timeout:.0f} s; wait for it, or stop it."
                    ) from None
                time.sleep(0.5)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Publishing
# --------------------------------------------------------------------------------------------


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
    """(rows, checksum) of a table or subquery: see the module docstring."""
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
