"""The publish rules: which schemas, tables and columns of the warehouse leave, and as what.

Reads ``customer_warehouse/serving_tables.csv`` (:func:`load_rules`) and, for a plan, the
warehouse's ``information_schema`` (:func:`plan_tables`); writes nothing but the temp table
``cw_pseudonyms`` on the publishing connection (:func:`fill_pseudonyms`). The rules are
described in the package docstring.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from customer_warehouse import privacy

#: The one rules file, beside this package (the package data of ``customer_warehouse``).
RULES_FILE = Path(__file__).resolve().parents[1] / "serving_tables.csv"
#: Schemas that never leave the warehouse, whatever the rules file says.
NEVER_PUBLISHED = frozenset({"raw", "staging", "intermediate"})
#: A published column with one of these names stops the publish: the one list,
#: seeds/personal_columns.csv (customer_warehouse.privacy).
PERSONAL_COLUMNS = privacy.personal_columns()
#: ``publish`` value of a column rule: the column becomes its keyed pseudonym.
PSEUDONYM = "pseudonym"
#: Temp table of (id, pseudonym) a publish fills once per distinct id (docs/privacy.md).
PSEUDONYM_TABLE = "cw_pseudonyms"
#: Schema of the manifest inside serving.duckdb (one read sees data and manifest together).
MANIFEST_SCHEMA = "manifest"


class ServingError(RuntimeError):
    """The serving copy cannot be published as asked; the message says what to change."""


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
