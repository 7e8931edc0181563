"""Small helpers that turn warehouse tables into Dagster materialization metadata.

Row counts go under ``dagster/row_count`` so the UI shows and plots them; previews are markdown
tables of a few rows. Previews are only taken from marts: staging and raw hold personal data
(names, e-mails, phones) that must not be copied into the Dagster event log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import duckdb

from customer_warehouse import privacy
from customer_warehouse.warehouse import quote_table, scalar

PREVIEW_ROWS = 5


def table_key(table: str) -> dg.AssetKey:
    """``schema.table`` → its asset key, ``schema/table`` (the dbt translator's rule too)."""
    return dg.AssetKey(table.split("."))


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return list(con.sql(f"select * from {quote_table(table)} limit 0").columns)


def row_count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(scalar(con, f"select count(*) from {quote_table(table)}"))


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; `|` and line breaks in values are escaped."""

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def counts_markdown(counts: Mapping[str, int], label: str, value: str = "rows") -> str:
    return markdown_table([label, value], sorted(counts.items()))


def preview(con: duckdb.DuckDBPyConnection, table: str, limit: int = PREVIEW_ROWS) -> str:
    """The first rows of a table (in its stored order) as markdown, personal columns left out."""
    columns = table_columns(con, table)
    shown = privacy.without_personal(columns)
    select_list = ", ".join(f'"{c}"' for c in shown) or "null as no_columns"
    rows = con.execute(
        f"select {select_list} from {quote_table(table)} limit {int(limit)}"
    ).fetchall()
    text = markdown_table(shown, rows)
    omitted = [c for c in columns if c not in shown]
    if omitted:
        text += f"\n\n(personal data not shown: {', '.join(omitted)})"
    return text


def value_counts(con: duckdb.DuckDBPyConnection, table: str, column: str) -> dict[str, int]:
    rows = con.execute(
        f'select cast("{column}" as varchar), count(*) from {quote_table(table)} '
        "group by 1 order by 1"
    ).fetchall()
    return {("(null)" if key is None else key): int(n) for key, n in rows}


def table_metadata(
    con: duckdb.DuckDBPyConnection, table: str, *, with_preview: bool = False
) -> dict[str, Any]:
    """Row count (and optionally a preview) of a table that the step just wrote."""
    metadata: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(row_count(con, table)),
        "table": dg.MetadataValue.text(table),
    }
    if with_preview:
        metadata["preview"] = dg.MetadataValue.md(preview(con, table))
    return metadata
