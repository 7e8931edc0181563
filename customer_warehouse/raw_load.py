"""Load the raw exports in CW_RAW_DIR into the `raw` schema, every column as text.

This is the raw-data contract (docs/raw-data.md) in code. Only structure is checked here: a
file that is missing a required column, uses another delimiter or is not UTF-8 stops the load
with a `RawDataError` naming the file, the problem and the fix, before any table is replaced.
Bad *values* are not this module's business: they travel as text to dbt staging, which
quarantines each bad row with a reason (staging.*_rejects).

All tables are replaced in one transaction, so a failed load leaves the previous raw tables
(and everything downstream) as they were, and loading the same files twice gives the same
tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from customer_warehouse.config import ConfigError, Settings, load_settings

RAW_SCHEMA = "raw"


@dataclass(frozen=True)
class SourceSpec:
    """One raw file of the contract."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    required_file: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required + self.optional


SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec(
        "orders",
        required=("order_id", "customer_id", "ordered_at", "amount"),
        optional=("currency", "channel", "status", "status_changed_at", "discount_amount"),
        required_file=True,
    ),
    SourceSpec(
        "customers",
        required=("customer_id",),
        optional=(
            "signed_up_at",
            "birth_date",
            "gender",
            "country",
            "province",
            "city",
            "email",
            "phone",
            "full_name",
            "acquisition_channel",
            "marketing_consent",
        ),
    ),
    SourceSpec("order_items", required=("order_id", "product_id", "quantity", "unit_price")),
    SourceSpec("products", required=("product_id",), optional=("product_name", "category")),
    SourceSpec(
        "redemptions",
        required=("customer_id", "redeemed_at", "points"),
        optional=("redemption_id",),
    ),
)
SOURCES_BY_NAME = {spec.name: spec for spec in SOURCES}


class RawDataError(RuntimeError):
    """A raw file is structurally broken; the message names the file and the fix."""


@dataclass
class LoadedSource:
    source: str
    file: str | None
    rows: int
    ignored_columns: list[str] = field(default_factory=list)


def find_source_file(raw_dir: Path, spec: SourceSpec) -> Path | None:
    """`<name>.csv` or `<name>.parquet`; both at once is ambiguous and refused."""
    candidates = [raw_dir / f"{spec.name}.{ext}" for ext in ("csv", "parquet")]
    present = [path for path in candidates if path.is_file()]
    if len(present) > 1:
        raise RawDataError(
            f"{raw_dir}: both {present[0].name} and {present[1].name} exist. Keep one of them: "
            "the warehouse cannot tell which export is current."
        )
    if not present and spec.required_file:
        raise RawDataError(
            f"{raw_dir} has no {spec.name}.csv or {spec.name}.parquet. It is the one file the "
            "warehouse needs (columns: " + ", ".join(spec.required) + "); see docs/raw-data.md, "
            "or unset CW_RAW_DIR to use the demo data."
        )
    return present[0] if present else None


def _csv_header(path: Path) -> list[str]:
    """The header's column names, checking encoding and delimiter on the way."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            first_line = handle.readline()
    except UnicodeDecodeError as exc:
        raise RawDataError(
            f"{path.name}: the file is not UTF-8 ({exc.reason} at byte {exc.start}). "
            "Re-export it as UTF-8, or convert it, e.g. `iconv -f GBK -t UTF-8 in.csv > out.csv`."
        ) from None
    if not first_line.strip():
        raise RawDataError(
            f"{path.name}: the first line is empty; the file needs a header row with column "
            "names (see docs/raw-data.md)."
        )
    columns = [name.strip().strip('"').strip().lower() for name in first_line.split(",")]
    if len(columns) == 1:
        for delimiter, label in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if delimiter in first_line:
                raise RawDataError(
                    f"{path.name}: the header is {label}-delimited, the contract is comma-"
                    "separated CSV. Re-export with ',' as the delimiter (docs/raw-data.md)."
                )
    return columns


def _parquet_columns(con: duckdb.DuckDBPyConnection, path: Path) -> list[str]:
    try:
        rel = con.sql(f"select * from read_parquet('{_sql_path(path)}') limit 0")
    except duckdb.Error as exc:
        raise RawDataError(
            f"{path.name}: not a readable Parquet file ({exc}). Re-export it, or export CSV."
        ) from None
    return [name.strip().lower() for name in rel.columns]


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _check_columns(path: Path, spec: SourceSpec, columns: list[str]) -> list[str]:
    """Return the columns that are not in the contract (ignored, reported)."""
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise RawDataError(
            f"{path.name}: column(s) {', '.join(duplicated)} appear more than once in the "
            "header. Rename or drop the extra copies."
        )
    missing = [c for c in spec.required if c not in columns]
    if missing:
        raise RawDataError(
            f"{path.name}: missing required column(s) {', '.join(missing)} (found: "
            f"{', '.join(columns) or 'none'}). Add them, or rename the matching columns; the "
            "contract is in docs/raw-data.md."
        )
    return [c for c in columns if c not in spec.columns]


def _select_source_sql(path: Path, spec: SourceSpec, columns: list[str]) -> str:
    """A query with the contract's columns, all text, plus provenance."""
    if path.suffix == ".csv":
        reader = (
            f"read_csv('{_sql_path(path)}', header = true, delim = ',', quote = '\"', "
            "escape = '\"', all_varchar = true, strict_mode = true, normalize_names = false, "
            "encoding = 'utf-8')"
        )
    else:
        reader = f"read_parquet('{_sql_path(path)}')"
    # Map normalized names back to the file's spelling.
    select_list = []
    for column in spec.columns:
        if column in columns:
            select_list.append(f'cast("{column}" as varchar) as {column}')
        else:
            select_list.append(f"cast(null as varchar) as {column}")
    return f"select {', '.join(select_list)} from {reader}"


def _empty_source_sql(spec: SourceSpec) -> str:
    cols = ", ".join(f"cast(null as varchar) as {c}" for c in spec.columns)
    return f"select {cols} where false"


def load_raw(con: duckdb.DuckDBPyConnection, raw_dir: Path, *, log=print) -> list[LoadedSource]:
    """Check every contract file in `raw_dir`, then replace the raw tables in one transaction."""
    plan: list[tuple[SourceSpec, Path | None, list[str], list[str]]] = []
    for spec in SOURCES:
        path = find_source_file(raw_dir, spec)
        if path is None:
            plan.append((spec, None, [], []))
            continue
        columns = _csv_header(path) if path.suffix == ".csv" else _parquet_columns(con, path)
        ignored = _check_columns(path, spec, columns)
        plan.append((spec, path, columns, ignored))

    results: list[LoadedSource] = []
    con.execute(f"create schema if not exists {RAW_SCHEMA}")
    con.execute("begin transaction")
    try:
        for spec, path, columns, ignored in plan:
            started = time.perf_counter()
            if path is None:
                query = _empty_source_sql(spec)
            else:
                query = _select_source_sql(path, spec, columns)
            try:
                con.execute(f"create or replace temp table _loading as {query}")
            except duckdb.Error as exc:
                raise RawDataError(_explain_read_error(path, exc)) from None
            con.execute(
                f"create or replace table {RAW_SCHEMA}.{spec.name} as "
                f"select *, '{path.name if path else ''}' as _source_file, "
                # rowids of a table written inside a transaction carry an offset: subtract it.
                "rowid - (select coalesce(min(rowid), 0) from _loading) + 1 as _source_row "
                "from _loading order by rowid"
            )
            con.execute("drop table _loading")
            rows = con.execute(f"select count(*) from {RAW_SCHEMA}.{spec.name}").fetchone()[0]
            results.append(LoadedSource(spec.name, path.name if path else None, rows, ignored))
            note = f" (ignored columns: {', '.join(ignored)})" if ignored else ""
            source_label = path.name if path else "no file: empty table"
            log(
                f"raw.{spec.name:<12} {rows:>12,} rows  from {source_label}"
                f"  [{time.perf_counter() - started:.1f}s]{note}"
            )
        _write_manifest(con, results)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return results


def _explain_read_error(path: Path | None, exc: duckdb.Error) -> str:
    name = path.name if path else "?"
    text = str(exc).splitlines()[0]
    lowered = str(exc).lower()
    if "unicode" in lowered or "utf" in lowered or "encoding" in lowered:
        fix = "Re-export it as UTF-8, or convert it, e.g. `iconv -f GBK -t UTF-8 in > out`."
    elif "expected" in lowered and "column" in lowered:
        fix = (
            "Some rows have more or fewer fields than the header: quote values that contain "
            "commas or line breaks, and check the delimiter is ','."
        )
    else:
        fix = "Check the file against docs/raw-data.md and re-export it."
    return f"{name}: could not be read ({text}). {fix}"


def _write_manifest(con: duckdb.DuckDBPyConnection, results: list[LoadedSource]) -> None:
    con.execute(
        f"create or replace table {RAW_SCHEMA}.load_manifest ("
        "source varchar, file varchar, rows bigint, ignored_columns varchar, "
        "loaded_at timestamp)"
    )
    con.executemany(
        f"insert into {RAW_SCHEMA}.load_manifest values (?, ?, ?, ?, "
        "cast(current_timestamp at time zone 'UTC' as timestamp))",
        [(r.source, r.file, r.rows, ",".join(r.ignored_columns)) for r in results],
    )


def ensure_survey_tables(con: duckdb.DuckDBPyConnection) -> None:
    """dbt stages raw.survey_responses; make sure it exists before the first survey ingest.

    The survey tables are append-only history owned by customer_warehouse.surveys: the raw
    full refresh above never touches them.
    """
    from customer_warehouse import surveys

    surveys.create_survey_tables(con)


def run(settings: Settings, *, log=print) -> list[LoadedSource]:
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(settings.warehouse_path)) as con:
        results = load_raw(con, settings.raw_dir, log=log)
        ensure_survey_tables(con)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    try:
        settings = load_settings()
        log_line = f"loading raw files from {settings.raw_dir} into {settings.warehouse_path}"
        print(log_line, file=sys.stderr)
        run(settings, log=lambda line: print(line, file=sys.stderr))
    except (ConfigError, RawDataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
