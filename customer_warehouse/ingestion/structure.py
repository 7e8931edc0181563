"""Structure checks of one file before anything is written: a CSV file's encoding, header and
delimiter, a Parquet file's schema and column types, and the columns against the contract.
Reads the file's head (CSV) or schema (Parquet); writes nothing.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from customer_warehouse.config import ENCODING_AUTO, encoding_variable
from customer_warehouse.ingestion.contract import (
    HEAD_BYTES,
    SOURCES_BY_NAME,
    RawDataError,
    SourceSpec,
)
from customer_warehouse.ingestion.deliveries import FileCheck
from customer_warehouse.ingestion.encoding import (
    CsvPlan,
    choose_encoding,
    line_of_offset,
    undecodable,
)
from customer_warehouse.ingestion.files import delivery_named, sql_path

DELIMITERS: tuple[tuple[str, str], ...] = (
    (",", "comma"),
    (";", "semicolon"),
    ("\t", "tab"),
    ("|", "pipe"),
)


# DuckDB scalar types and how they become text (see docs/raw-data.md, "Parquet").
TIMESTAMP_TYPES = frozenset({"timestamp", "timestamp_s", "timestamp_ms", "timestamp_ns"})
TEXT_CAST_TYPES = frozenset(
    {
        "varchar",
        "boolean",
        "tinyint",
        "smallint",
        "integer",
        "bigint",
        "hugeint",
        "utinyint",
        "usmallint",
        "uinteger",
        "ubigint",
        "uhugeint",
        "varint",
        "bignum",
        "decimal",
        "float",
        "double",
        "date",
        "time",
        "time_ns",
        "time with time zone",
        "interval",
        "uuid",
        "enum",
        "null",
        "sqlnull",
    }
)


@dataclass
class Planned:
    spec: SourceSpec
    path: Path | None
    columns: list[str]
    ignored: list[str]
    csv: CsvPlan | None = None
    parquet_types: dict[str, str] = field(default_factory=dict)
    check: FileCheck | None = None  # the file and what the load does with it


def _head_text(path: Path, head: bytes, plan: CsvPlan, variable: str) -> str:
    """The first megabyte as text (the end of a cut character dropped), BOM removed."""
    decoder = codecs.getincrementaldecoder(plan.encoding)("strict")
    try:
        text = decoder.decode(head, path.stat().st_size <= len(head))
    except UnicodeDecodeError as exc:
        line = line_of_offset(head, exc.start)
        raise RawDataError(undecodable(path, plan, exc.start, line, variable)) from None
    return text.removeprefix("\ufeff")


def _normalize_name(name: str) -> str:
    return name.strip().strip('"').strip().lower()


def _split_header(line: str, spec: SourceSpec | None) -> tuple[str, list[str]]:
    """The delimiter and the column names: the first delimiter (`,` first) whose split holds
    every required column; failing that, the one that gives the most columns."""
    splits = []
    for delimiter, _ in DELIMITERS:
        cells = next(csv.reader([line], delimiter=delimiter, strict=False), [])
        names = [_normalize_name(n) for n in cells]
        if spec is not None and all(c in names for c in spec.required):
            return delimiter, names
        splits.append((delimiter, names))
    return max(splits, key=lambda split: len(split[1]))  # max keeps the first of equals


def _delimiter_label(delimiter: str) -> str:
    return next(label for d, label in DELIMITERS if d == delimiter)


def delimiter_text(delimiter: str, note: str = "") -> str:
    """For messages: `',' (comma)`, `tab`; `note` goes inside the parentheses."""
    label = _delimiter_label(delimiter) + note
    return (
        f"tab{f' ({note[2:]})' if note else ''}"
        if delimiter == "\t"
        else f"'{delimiter}' ({label})"
    )


def plan_csv(path: Path, spec: SourceSpec, setting: str) -> CsvPlan:
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    encoding, label, how = choose_encoding(path, spec, head, setting) if head else ("", "", "")
    plan = CsvPlan(encoding, label, how, ",", [])
    text = _head_text(path, head, plan, encoding_variable(spec.name)) if head else ""
    if not text.strip():
        what = "is empty (0 bytes)" if not head else "holds only blank space"
        if spec.required_file:
            fix = f"re-export it; {spec.name} is the one file the warehouse needs"
        else:
            fix = (
                f"re-export it, or delete it if you have no {spec.name} data ({spec.name} "
                "is optional)"
            )
        raise RawDataError(
            f"{path.name} {what}. An export without rows still has its header line "
            f"({', '.join(spec.required)}, ...), so an empty file is taken for a failed "
            f"export. Fix: {fix}. Nothing was loaded."
        )
    line = re.split("\r\n|\r|\n", text, maxsplit=1)[0]
    if not line.strip():
        raise RawDataError(
            f"{path.name}: line 1 is empty. Fix: put the header row, the column names "
            f"({', '.join(spec.required)}, ...), on the first line (see docs/raw-data.md)."
        )
    plan.delimiter, plan.columns = _split_header(line, spec)
    return plan


def csv_header(path: Path, spec: SourceSpec | None = None) -> list[str]:
    """The header's column names (encoding and delimiter detected as for a load)."""
    spec = spec or SOURCES_BY_NAME.get(path.stem, SourceSpec(path.stem, ()))
    return plan_csv(path, spec, ENCODING_AUTO).columns


def check_columns(
    path: Path, spec: SourceSpec, columns: list[str], delimiter: str = ","
) -> list[str]:
    """Return the columns that are not in the contract (ignored, reported; a column without a
    name, as a trailing delimiter makes, as `(column N without a name)`)."""
    duplicated = sorted({c for c in columns if c and columns.count(c) > 1})
    if duplicated:
        raise RawDataError(
            f"{path.name}: column(s) {', '.join(duplicated)} appear more than once in the "
            "header (line 1). Fix: rename or drop the extra copies."
        )
    missing = [c for c in spec.required if c not in columns]
    if missing:
        split = ""
        if path.suffix == ".csv":
            split = (
                f" The header (line 1) was split at {delimiter_text(delimiter)}; the loader "
                "recognises comma, semicolon, tab and pipe."
            )
        raise RawDataError(
            f"{path.name}: missing required column(s) {', '.join(missing)} (found: "
            f"{', '.join(columns) or 'none'}).{split} Fix: add them, or rename the matching "
            "columns; the contract is in docs/raw-data.md."
        )
    return [
        c or f"(column {i} without a name)"
        for i, c in enumerate(columns, start=1)
        if c not in spec.columns
    ]


def parquet_schema(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, str]:
    """{normalized column name: DuckDB type id}."""
    try:
        rel = con.sql(f"select * from read_parquet('{sql_path(path)}') limit 0")
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        raise RawDataError(
            f"{path.name}: not a readable Parquet file ({first}). Re-export it, or export CSV."
        ) from None
    pairs = zip(rel.columns, rel.types, strict=True)
    return {name.strip().lower(): dtype.id for name, dtype in pairs}


def check_parquet_types(path: Path, spec: SourceSpec, types: Mapping[str, str]) -> None:
    for column in spec.columns:
        dtype = types.get(column)
        if dtype is None or dtype in TEXT_CAST_TYPES or dtype in TIMESTAMP_TYPES:
            continue
        if dtype == "timestamp with time zone":
            continue
        hint = ""
        if dtype == "blob":
            hint = (
                " If it holds text, the writer stored it as raw bytes (Parquet BINARY without "
                "the STRING annotation): write it as a string column."
            )
        raise RawDataError(
            f"{path.name}: column {column} has the type {dtype.upper()}, which holds no plain "
            "value; a contract column must be text, a number, a boolean, a date or a "
            f"timestamp.{hint} Fix: re-export {column} as one of those types (or export CSV)."
        )


def plan_file(
    con: duckdb.DuckDBPyConnection, check: FileCheck, spec: SourceSpec, setting: str
) -> Planned:
    """Structure checks of one file to load (nothing is written)."""
    path = check.file.path
    with delivery_named(check.file):
        if path.suffix.lower() == ".csv":
            csv_plan = plan_csv(path, spec, setting)
            ignored = check_columns(path, spec, csv_plan.columns, csv_plan.delimiter)
            return Planned(spec, path, csv_plan.columns, ignored, csv=csv_plan, check=check)
        types = parquet_schema(con, path)
        ignored = check_columns(path, spec, list(types))
        check_parquet_types(path, spec, types)
        return Planned(spec, path, list(types), ignored, parquet_types=types, check=check)
