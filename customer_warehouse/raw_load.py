"""Load the raw exports in CW_RAW_DIR into the `raw` schema, every column as text.

This is the raw-data contract (docs/raw-data.md) in code. Each source is either one full
export (`orders.csv` or `orders.parquet`) or a folder of deliveries over time (`orders/` with
`2025-01-14.csv`, `2025-01-15.parquet`, ...: each file one delivery, ordered by its name); both
at once is refused. Only structure is checked here. A whole-file problem (an empty file, a
missing required column, bytes that decode in no supported encoding, a quote that is never
closed, a Parquet column that holds no plain value) stops the load with a `RawDataError`
naming the file, the line where it applies and the fix, before any table is changed.
Everything else loads:

* the encoding is detected (UTF-8 with or without BOM, UTF-16 with BOM, GB18030) or configured
  (`CW_RAW_ENCODING`, `CW_RAW_ENCODING_<SOURCE>`); a file that is not UTF-8 is transcoded to a
  temporary UTF-8 file in a streaming way and that is loaded;
* the delimiter (`,`, `;`, tab, `|`) is detected from the header;
* a row with more or fewer fields than the header, or with broken quoting confined to its line,
  is kept: all contract columns NULL, `_load_error` says why and `_raw_line` holds the line;
* a field of several megabytes loads as text (staging quarantines it as `oversized_field`).

Bad *values* are not this module's business: they travel as text to dbt staging, which
quarantines each bad row with a reason (staging.*_rejects) and lets the latest delivery of a
row win over older copies (staging.superseded_*).

Every raw table has the contract's columns (text), then `_source_file` (`orders.csv`, or
`orders/2025-01-14.csv` for a delivery), `_source_row` (the 1-based number of the data record
in the file: the header and blank lines do not count, a malformed row does), `_load_error` and
`_raw_line` (both NULL for a good row), `_delivery` (the delivery's sort label: the file name
without its suffix) and `_file_sha256` (the content the row came from).

Loading is incremental, and `raw.deliveries` is its bookkeeping: one row per file name and
content (SHA-256) with its size, modification time, rows, encoding and status (`loaded`,
`replaced`, `removed`). A file already loaded with the same content is not read again (when its
size and modification time are as recorded it is not even hashed); a new file adds its rows; a
changed file replaces its own rows only; a file that left the folder takes its rows out of the
raw table (the folder is the record: a full rebuild from it must give the same warehouse). All
of a load happens in one transaction, so a failed load leaves every raw table as it was, and
loading the same folder twice changes nothing.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import hashlib
import itertools
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from customer_warehouse import privacy
from customer_warehouse.config import (
    ENCODING_AUTO,
    ConfigError,
    Settings,
    encoding_variable,
    load_settings,
    parse_raw_encodings,
)

RAW_SCHEMA = "raw"
# Provenance and load columns after the contract's columns, in this order, in every raw table.
LOAD_COLUMNS = (
    "_source_file",
    "_source_row",
    "_load_error",
    "_raw_line",
    "_delivery",
    "_file_sha256",
)
# The bookkeeping of every file ever loaded (one row per file name and content) and its states.
DELIVERIES_TABLE = f"{RAW_SCHEMA}.deliveries"
LOADED = "loaded"  # its rows are in the raw table now
REPLACED = "replaced"  # a later content of the same file name took its rows' place
REMOVED = "removed"  # the file left the folder: its rows left the raw table
DELIVERY_SUFFIXES = frozenset({".csv", ".parquet"})
# A file modified this close to when it was last hashed is hashed again (see _check_file).
RACY_SECONDS = 2.0
_NOW = "cast(current_timestamp at time zone 'UTC' as timestamp)"
_DELIVERIES_DDL = f"""
create table if not exists {DELIVERIES_TABLE} (
    source varchar,
    file varchar,
    delivery varchar,
    file_sha256 varchar,
    size_bytes bigint,
    modified_at timestamp,
    mtime_ns bigint,
    path varchar,
    rows bigint,
    malformed_rows bigint,
    encoding varchar,
    delimiter varchar,
    ignored_columns varchar,
    loaded_at timestamp,
    verified_at timestamp,
    status varchar,
    status_changed_at timestamp
)
"""
# `_load_error` codes (staging rejects every such row as `malformed_row`).
TOO_MANY_FIELDS = "too_many_fields"
TOO_FEW_FIELDS = "too_few_fields"
BAD_QUOTING = "bad_quoting"

# A single CSV record (a line, or several when a quoted value holds line breaks) may be this
# long. Far above any real row, so a field of several megabytes loads (and staging quarantines
# it); a longer record is almost always a quote that is never closed.
MAX_RECORD_BYTES = 256 * 1024 * 1024
HEAD_BYTES = 1024 * 1024  # read to detect the encoding and to find the header line
# Auto-detected GB18030 must look like Chinese text (see _gb2312_share).
MIN_GB2312_SHARE = 0.8
CHUNK_BYTES = 4 * 1024 * 1024  # streaming transcoding and scanning
DELIMITERS: tuple[tuple[str, str], ...] = (
    (",", "comma"),
    (";", "semicolon"),
    ("\t", "tab"),
    ("|", "pipe"),
)
ENCODING_LABELS = {"utf-8": "UTF-8", "utf-16": "UTF-16", "gb18030": "GB18030"}

# DuckDB scalar types and how they become text (see docs/raw-data.md, "Parquet").
_TIMESTAMP_TYPES = frozenset({"timestamp", "timestamp_s", "timestamp_ms", "timestamp_ns"})
_TEXT_CAST_TYPES = frozenset(
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
    SourceSpec(
        "point_adjustments",
        required=("adjustment_id", "customer_id", "points", "reason", "adjusted_at"),
    ),
)
SOURCES_BY_NAME = {spec.name: spec for spec in SOURCES}


class RawDataError(RuntimeError):
    """A raw file is structurally broken; the message names the file and the fix."""


@dataclass
class LoadedSource:
    """One source after a load: what its raw table holds and what this load did to it."""

    source: str
    file: str | None  # `orders.csv`; `orders/` for deliveries in a folder; None: no file
    rows: int  # rows in raw.<source> now
    ignored_columns: list[str] = field(default_factory=list)
    encoding: str | None = None  # CSV: how the file(s) were decoded, e.g. "GB18030"
    delimiter: str | None = None  # CSV: the field delimiter(s) found in the header
    malformed_rows: int = 0  # rows in the table with a `_load_error`
    deliveries: int = 0  # files in the table now
    new_files: list[str] = field(default_factory=list)  # read by this load for the first time
    changed_files: list[str] = field(default_factory=list)  # read again: their content changed
    removed_files: list[str] = field(default_factory=list)  # gone: their rows left the table
    unchanged_files: list[str] = field(default_factory=list)  # already loaded as they are


@dataclass
class _CsvPlan:
    """How one CSV file is read: decided before anything is loaded."""

    encoding: str  # a Python codec name; "utf-8" is read by DuckDB directly
    encoding_label: str  # for the log and the manifest: "UTF-8 with BOM", "GB18030", ...
    encoding_how: str  # "detected...", or "configured: <variable>..."
    delimiter: str
    columns: list[str]


@dataclass
class _Planned:
    spec: SourceSpec
    path: Path | None
    columns: list[str]
    ignored: list[str]
    csv: _CsvPlan | None = None
    parquet_types: dict[str, str] = field(default_factory=dict)
    check: _FileCheck | None = None  # the file and what the load does with it


# --------------------------------------------------------------------------------------------
# Finding the files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryFile:
    """One file of a source: the full export (`orders.csv`) or one delivery (`orders/<x>.csv`)."""

    source: str
    path: Path
    name: str  # as kept in `_source_file` and raw.deliveries: `orders.csv`, `orders/2025-01-14.csv`
    delivery: str  # the delivery's sort label (`_delivery`): the file name without its suffix


def find_source_file(raw_dir: Path, spec: SourceSpec) -> Path | None:
    """`<name>.csv` or `<name>.parquet`; both at once is ambiguous and refused."""
    candidates = [raw_dir / f"{spec.name}.{ext}" for ext in ("csv", "parquet")]
    present = [path for path in candidates if path.is_file()]
    if len(present) > 1:
        raise RawDataError(
            f"{raw_dir}: both {present[0].name} and {present[1].name} exist. Keep one of them: "
            "the warehouse cannot tell which export is current."
        )
    if not present and spec.required_file and not (raw_dir / spec.name).is_dir():
        raise RawDataError(
            f"{raw_dir} has no {spec.name}.csv or {spec.name}.parquet (nor a folder "
            f"{spec.name}/ of deliveries). It is the one file the warehouse needs (columns: "
            + ", ".join(spec.required)
            + "); see docs/raw-data.md, or unset CW_RAW_DIR to use the demo data."
        )
    return present[0] if present else None


def find_deliveries(raw_dir: Path, spec: SourceSpec) -> tuple[list[DeliveryFile], list[str]]:
    """The source's files in delivery order, and the names in its folder that are ignored.

    Either one full export (`orders.csv` or `orders.parquet`: one delivery) or a folder
    `orders/` whose `*.csv` / `*.parquet` files are deliveries, ordered by name (a date, or any
    label that sorts in delivery order). Hidden files (`.part`, `.DS_Store`) and other suffixes
    are ignored and reported. Both layouts at once, or two files with one name, are refused.
    """
    single = find_source_file(raw_dir, spec)
    folder = raw_dir / spec.name
    if single is not None and folder.is_dir():
        raise RawDataError(
            f"{raw_dir}: both {single.name} and the folder {spec.name}/ exist. The warehouse "
            f"reads either one full export ({spec.name}.csv or .parquet) or deliveries over "
            f"time ({spec.name}/<date>.csv or .parquet), not both, so it cannot tell which rows "
            f"are current. Fix: to keep {single.name} as the first delivery, move it into "
            f"{spec.name}/ under a name that sorts before every delivery (e.g. "
            f"{spec.name}/0000-00-00{single.suffix}); otherwise delete the one you do not want."
        )
    if single is not None:
        return [DeliveryFile(spec.name, single, single.name, single.stem)], []
    if not folder.is_dir():
        return [], []
    files: dict[str, Path] = {}
    ignored: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() not in DELIVERY_SUFFIXES:
            ignored.append(f"{spec.name}/{path.name}")
            continue
        if path.stem in files:
            raise RawDataError(
                f"{folder}: both {files[path.stem].name} and {path.name} are the delivery "
                f"{path.stem}. Keep one of them: the warehouse cannot tell which is current."
            )
        files[path.stem] = path
    if not files and spec.required_file:
        raise RawDataError(
            f"{folder} holds no delivery (a .csv or .parquet file). The orders are the one "
            "thing the warehouse needs: put the exports there (docs/raw-data.md), or remove "
            f"the empty folder and give {spec.name}.csv."
        )
    deliveries = [
        DeliveryFile(spec.name, path, f"{spec.name}/{path.name}", stem)
        for stem, path in sorted(files.items())
    ]
    return deliveries, ignored


def file_sha256(path: Path) -> str:
    """SHA-256 of the file's bytes, hex (streamed)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# CSV: encoding, header, delimiter
# --------------------------------------------------------------------------------------------


def _label(encoding: str) -> str:
    return ENCODING_LABELS.get(encoding, encoding.upper())


def _iconv_hint(path: Path, encoding: str = "<ENCODING>") -> str:
    return f"`iconv -f {encoding} -t UTF-8 {path.name} > {path.stem}.utf8{path.suffix}`"


def _line_of_offset(data: bytes, offset: int, lines_before: int = 0) -> int:
    return lines_before + data.count(b"\n", 0, offset) + 1


@dataclass
class _Utf8Error:
    offset: int  # byte offset of the first byte that is not UTF-8
    line: int
    wide_before: bool  # UTF-8 text beyond Latin (e.g. Chinese) before it: a mixed file


_WIDE_CHARACTER = re.compile("[\u0800-\U0010ffff]")


def _check_utf8(path: Path) -> _Utf8Error | None:
    """Stream the whole file through a UTF-8 decoder (plain ASCII chunks are skipped fast)."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    fed = 0
    newlines = 0
    wide = False
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(CHUNK_BYTES)
            fed += len(chunk)
            if chunk and chunk.isascii() and not decoder.getstate()[0]:
                newlines += chunk.count(b"\n")
                continue
            try:
                text = decoder.decode(chunk, not chunk)
            except UnicodeDecodeError as exc:
                before = exc.object[: exc.start]
                wide = wide or bool(_WIDE_CHARACTER.search(before.decode("utf-8", "ignore")))
                offset = fed - len(exc.object) + exc.start
                return _Utf8Error(offset, newlines + before.count(b"\n") + 1, wide)
            newlines += chunk.count(b"\n")
            wide = wide or bool(_WIDE_CHARACTER.search(text))
            if not chunk:
                return None


def _choose_encoding(
    path: Path, spec: SourceSpec, head: bytes, setting: str
) -> tuple[str, str, str]:
    """(codec, label, how it was chosen) for a CSV file.

    Auto: a byte order mark decides; else the whole file is checked as UTF-8; a file that is
    not UTF-8 is GB18030 if its first bad byte comes before any UTF-8 text beyond Latin
    (transcoding then checks every byte as GB18030).
    """
    variable = encoding_variable(spec.name)
    if setting != ENCODING_AUTO:
        codec = "utf-8" if setting == "utf-8-sig" else setting
        label = _label(codec)
        if codec == "utf-8" and head.startswith(codecs.BOM_UTF8):
            label = "UTF-8 with BOM"
        return codec, label, f"configured: {variable} or CW_RAW_ENCODING"
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8", "UTF-8 with BOM", "detected"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", "UTF-16", "detected from its byte order mark"
    error = _check_utf8(path)
    if error is None:
        return "utf-8", "UTF-8", "detected"
    if error.wide_before:
        raise RawDataError(
            f"{path.name}: line {error.line} (byte {error.offset}) is not valid UTF-8, but the "
            "lines before it hold UTF-8 text: the file mixes encodings (often rows appended "
            "by another program). Fix: re-export the file in one encoding, or convert the rows "
            f"from line {error.line} on (see them with `sed -n '{error.line}p' {path.name}`). "
            "Nothing was loaded."
        )
    share = _gb2312_share(path, error.offset)
    if share is not None and share < MIN_GB2312_SHARE:
        raise RawDataError(
            f"{path.name}: line {error.line} (byte {error.offset}) is not valid UTF-8, and "
            f"read as GB18030 only {share:.0%} of its non-ASCII characters from there on are "
            "common Chinese characters: the file is in another encoding (Latin-1 'très' "
            f"would read as 'tr鑣'). Fix: set {variable} to the file's encoding (for example "
            "cp1252, latin-1, big5, or gbk for traditional characters in a GBK export), or "
            f"convert it to UTF-8: {_iconv_hint(path)}. Nothing was loaded."
        )
    return "gb18030", "GB18030", f"detected: not UTF-8 from line {error.line}"


def _gb2312_share(path: Path, offset: int) -> float | None:
    """Of the non-ASCII characters in 64 KB read as GB18030 from the line holding `offset`,
    the share that GB2312 (the common simplified characters) has; None when that sample does
    not decode (the transcoding reports the byte) or holds no such character.

    Real Chinese text scores above 0.95; Latin-1 or Big5 bytes that happen to decode as
    GB18030 land in its rare extension areas and score far lower."""
    with path.open("rb") as handle:
        handle.seek(max(0, offset - 4096))
        before = handle.read(min(offset, 4096))
        sample = before[before.rfind(b"\n") + 1 :] + handle.read(65536)
    try:
        text = codecs.getincrementaldecoder("gb18030")("strict").decode(sample, False)
    except UnicodeDecodeError:
        return None
    wide = [c for c in text if ord(c) > 127]
    if not wide:
        return None
    common = 0
    for character in wide:
        try:
            character.encode("gb2312")
            common += 1
        except UnicodeEncodeError:
            pass
    return common / len(wide)


def _head_text(path: Path, head: bytes, plan: _CsvPlan, variable: str) -> str:
    """The first megabyte as text (the end of a cut character dropped), BOM removed."""
    decoder = codecs.getincrementaldecoder(plan.encoding)("strict")
    try:
        text = decoder.decode(head, path.stat().st_size <= len(head))
    except UnicodeDecodeError as exc:
        line = _line_of_offset(head, exc.start)
        raise RawDataError(_undecodable(path, plan, exc.start, line, variable)) from None
    return text.removeprefix("\ufeff")


def _undecodable(path: Path, plan: _CsvPlan, offset: int, line: int, variable: str) -> str:
    if plan.encoding_how.startswith("detected: not UTF-8"):
        what = "is neither UTF-8 nor GB18030, the encodings detected automatically"
        fix = (
            f"set {variable} to the file's encoding (for example big5, shift_jis, cp1252 or "
            "latin-1), or convert it to UTF-8"
        )
    else:
        what = f"is not valid {plan.encoding_label} ({plan.encoding_how})"
        fix = (
            f"set {variable} to the file's encoding (or to auto, to detect it), or convert "
            "it to UTF-8; the file may also mix encodings"
        )
    return (
        f"{path.name}: byte {offset} (line {line}) {what}. Fix: {fix}: {_iconv_hint(path)} "
        "(`iconv -c` drops the bytes that do not convert). Nothing was loaded."
    )


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


def _delimiter_text(delimiter: str, note: str = "") -> str:
    """For messages: `',' (comma)`, `tab`; `note` goes inside the parentheses."""
    label = _delimiter_label(delimiter) + note
    return (
        f"tab{f' ({note[2:]})' if note else ''}"
        if delimiter == "\t"
        else f"'{delimiter}' ({label})"
    )


def _plan_csv(path: Path, spec: SourceSpec, setting: str) -> _CsvPlan:
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    encoding, label, how = _choose_encoding(path, spec, head, setting) if head else ("", "", "")
    plan = _CsvPlan(encoding, label, how, ",", [])
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


def _csv_header(path: Path, spec: SourceSpec | None = None) -> list[str]:
    """The header's column names (encoding and delimiter detected as for a load)."""
    spec = spec or SOURCES_BY_NAME.get(path.stem, SourceSpec(path.stem, ()))
    return _plan_csv(path, spec, ENCODING_AUTO).columns


def _check_columns(
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
                f" The header (line 1) was split at {_delimiter_text(delimiter)}; the loader "
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


# --------------------------------------------------------------------------------------------
# Parquet
# --------------------------------------------------------------------------------------------


def _parquet_schema(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, str]:
    """{normalized column name: DuckDB type id}."""
    try:
        rel = con.sql(f"select * from read_parquet('{_sql_path(path)}') limit 0")
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        raise RawDataError(
            f"{path.name}: not a readable Parquet file ({first}). Re-export it, or export CSV."
        ) from None
    pairs = zip(rel.columns, rel.types, strict=True)
    return {name.strip().lower(): dtype.id for name, dtype in pairs}


def _check_parquet_types(path: Path, spec: SourceSpec, types: Mapping[str, str]) -> None:
    for column in spec.columns:
        dtype = types.get(column)
        if dtype is None or dtype in _TEXT_CAST_TYPES or dtype in _TIMESTAMP_TYPES:
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


def _parquet_text(column: str, dtype: str) -> str:
    """SQL turning a Parquet column into text, deterministically (docs/raw-data.md)."""
    quoted = f'"{column}"'

    def timestamp_text(ts: str) -> str:
        return (
            f"case when isfinite({ts}) then strftime({ts}, '%Y-%m-%d %H:%M:%S') || "
            f"case when strftime({ts}, '%f') = '000000' then '' else strftime({ts}, '.%f') end "
            f"else cast({ts} as varchar) end"
        )

    if dtype == "timestamp with time zone":
        utc = f"timezone('UTC', {quoted})"
        return f"({timestamp_text(utc)}) || '+00:00'"
    if dtype in _TIMESTAMP_TYPES:
        return timestamp_text(f"cast({quoted} as timestamp)")
    return f"cast({quoted} as varchar)"


# --------------------------------------------------------------------------------------------
# Streaming helpers (files can be gigabytes: never read whole)
# --------------------------------------------------------------------------------------------


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _transcode(path: Path, plan: _CsvPlan, target: Path, setting_variable: str) -> None:
    """Write `path`, decoded as `plan.encoding`, to `target` as UTF-8; stop on a bad byte."""
    decoder = codecs.getincrementaldecoder(plan.encoding)("strict")
    fed = 0
    newlines = 0
    first = True
    with path.open("rb") as source, target.open("wb") as sink:
        while True:
            chunk = source.read(CHUNK_BYTES)
            fed += len(chunk)
            try:
                text = decoder.decode(chunk, not chunk)
            except UnicodeDecodeError as exc:
                offset = fed - len(exc.object) + exc.start
                line = newlines + 1
                line += exc.object[: exc.start].decode(plan.encoding, "replace").count("\n")
                raise RawDataError(
                    _undecodable(path, plan, offset, line, setting_variable)
                ) from None
            if first:
                text = text.removeprefix("\ufeff")
                first = False
            newlines += text.count("\n")
            sink.write(text.encode("utf-8"))
            if not chunk:
                return


def _has_mixed_line_ends(path: Path) -> bool:
    """True when the file has CRLF and bare LF or CR line breaks (rows appended by another
    program, a file edited on two systems). Quoted values may hold either kind too, so this
    alone does not mean DuckDB cannot read the file (see `_load_csv`)."""
    crlf = bare_lf = bare_cr = 0
    carry = b""
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            data = carry + chunk
            # Keep a trailing CR for the next chunk: it may be the first half of a CRLF.
            carry = b"\r" if data.endswith(b"\r") else b""
            data = data[:-1] if carry else data
            pairs = data.count(b"\r\n")
            crlf += pairs
            bare_lf += data.count(b"\n") - pairs
            bare_cr += data.count(b"\r") - pairs
            if crlf and (bare_lf or bare_cr):
                return True
    bare_cr += len(carry)
    return bool(crlf and (bare_lf or bare_cr))


def _duckdb_reads(path: Path, plan: _CsvPlan) -> bool:
    """Whether DuckDB's reader gets through the file (a probe on a private connection, so a
    failure cannot abort the load's transaction)."""
    with duckdb.connect() as probe:
        try:
            probe.execute(
                f"select count(*) from {_read_csv_sql(path, plan.delimiter, len(plan.columns))}"
            )
        except duckdb.Error:
            return False
    return True


def _normalize_line_ends(path: Path, target: Path) -> None:
    """Copy `path` to `target` with every CRLF and bare CR turned into LF (streamed)."""
    carry = b""
    with path.open("rb") as source, target.open("wb") as sink:
        while chunk := source.read(CHUNK_BYTES):
            data = carry + chunk
            carry = b"\r" if data.endswith(b"\r") else b""
            data = data[:-1] if carry else data
            sink.write(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
        sink.write(carry.replace(b"\r", b"\n"))


def _line_break(path: Path) -> bytes:
    """b"\\n" (LF or CRLF line ends), or b"\\r" for a file whose lines end in CR only."""
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    return b"\r" if b"\r" in head and b"\n" not in head else b"\n"


def _line_at(path: Path, offset: int) -> int:
    """The 1-based line number of the byte at `offset`."""
    line_break = _line_break(path)
    count = 0
    position = 0
    with path.open("rb") as handle:
        while position < offset:
            chunk = handle.read(min(CHUNK_BYTES, offset - position))
            if not chunk:
                break
            count += chunk.count(line_break)
            position += len(chunk)
    return count + 1


def _lines(path: Path) -> Iterator[bytes]:
    """The file's lines, each with its line break."""
    line_break = _line_break(path)
    with path.open("rb") as handle:
        if line_break == b"\n":
            yield from handle
            return
        rest = b""
        while chunk := handle.read(CHUNK_BYTES):
            *lines, rest = (rest + chunk).split(line_break)
            yield from (line + line_break for line in lines)
        if rest:
            yield rest


def _blank_lines_before(path: Path, offsets: Sequence[int]) -> list[int]:
    """For each byte offset (ascending, each the start of a line): how many blank lines outside
    quoted values come before it. DuckDB numbers them like records but loads no row for them,
    so they shift the record numbers of the rows it rejects."""
    counts: list[int] = []
    if not offsets:
        return counts
    targets = iter(offsets)
    target = next(targets)
    position = 0
    blanks = 0
    in_quotes = False
    for line in _lines(path):
        while target is not None and target < position + len(line):
            counts.append(blanks)
            target = next(targets, None)
        if target is None:
            break
        if not in_quotes and not line.strip(b"\r\n"):
            blanks += 1
        if line.count(b'"') % 2:
            in_quotes = not in_quotes
        position += len(line)
    counts.extend(blanks for _ in range(len(offsets) - len(counts)))
    return counts


# --------------------------------------------------------------------------------------------
# Reading one CSV file into temp tables
# --------------------------------------------------------------------------------------------

_REJECTS = "_cw_rejects"
_REJECT_SCANS = "_cw_reject_scans"


def _read_csv_sql(path: Path, delimiter: str, n_columns: int) -> str:
    columns = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(n_columns))
    return (
        f"read_csv('{_sql_path(path)}', header = true, auto_detect = false, "
        f"columns = {{{columns}}}, delim = '{delimiter}', quote = '\"', escape = '\"', "
        "strict_mode = true, encoding = 'utf-8', "
        f"max_line_size = {MAX_RECORD_BYTES}, ignore_errors = true, store_rejects = true, "
        f"rejects_table = '{_REJECTS}', rejects_scan = '{_REJECT_SCANS}', "
        "rejects_line_size_limit = 0)"
    )


def _drop_reject_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"drop table if exists {_REJECTS}")
    con.execute(f"drop table if exists {_REJECT_SCANS}")


# SQL pieces on the rejects table: the record's text without the blank lines DuckDB puts in
# front of it, and the byte offset where that text starts.
_NEWLINES = "chr(13) || chr(10)"
_RECORD_TEXT = f"rtrim(ltrim(csv_line, {_NEWLINES}), {_NEWLINES})"
_RECORD_START = f"line_byte_position - 1 + length(csv_line) - length(ltrim(csv_line, {_NEWLINES}))"


def _read_csv(
    con: duckdb.DuckDBPyConnection,
    original: Path,
    readable: Path,
    plan: _CsvPlan,
    spec: SourceSpec,
) -> int:
    """Read `readable` (UTF-8) into `_cw_good` and `_cw_bad`; return the number of bad rows.

    `_cw_good`: the well-formed rows in file order (c0..cN as in the header).
    `_cw_bad`: one row per malformed record: line (DuckDB's record number, header = 1),
    start (byte offset), load_error, raw_line.
    """
    _drop_reject_tables(con)
    reader = _read_csv_sql(readable, plan.delimiter, len(plan.columns))
    try:
        con.execute(f"create or replace temp table _cw_good as select * from {reader}")
    except duckdb.Error as exc:
        raise RawDataError(_explain_read_error(original, exc)) from None

    # Whole-file problems first: the earliest one stops the load. Broken quoting is a row
    # problem only while it stays within one line; spanning lines, a quote was left open.
    fatal = con.execute(
        f"select error_type::varchar, {_RECORD_START}, error_message, "
        f"length({_RECORD_TEXT}) - length(replace({_RECORD_TEXT}, chr(10), '')) "
        f"from {_REJECTS} "
        f"where error_type::varchar not in ('MISSING COLUMNS', 'TOO MANY COLUMNS') "
        "and not (error_type::varchar = 'UNQUOTED VALUE' "
        f"and not contains({_RECORD_TEXT}, chr(10))) "
        "order by line limit 1"
    ).fetchone()
    if fatal is not None:
        error_type, start, message, breaks = fatal
        line = _line_at(readable, start)
        raise RawDataError(_explain_fatal(original, spec, plan, error_type, line, breaks, message))

    con.execute(
        "create or replace temp table _cw_bad as "
        f"select line, min({_RECORD_START}) as start, "
        f"case when bool_or(error_type::varchar = 'UNQUOTED VALUE') then '{BAD_QUOTING}' "
        f"when bool_or(error_type::varchar = 'TOO MANY COLUMNS') then '{TOO_MANY_FIELDS}' "
        f"else '{TOO_FEW_FIELDS}' end as load_error, "
        f"any_value({_RECORD_TEXT}) as raw_line "
        f"from {_REJECTS} group by line"
    )
    _drop_reject_tables(con)
    return con.execute("select count(*) from _cw_bad").fetchone()[0]


def _explain_fatal(
    path: Path,
    spec: SourceSpec,
    plan: _CsvPlan,
    error_type: str,
    line: int,
    breaks: int,
    message: str,
) -> str:
    if error_type == "UNQUOTED VALUE":
        return (
            f"{path.name}: the quoted value that starts on line {line} is never closed (or a "
            f"quote inside it is not doubled), so the next {breaks} line(s) would be read as "
            "part of that one value. Fix the quoting on that line: a value that starts with "
            '" must end with " right before the delimiter or the line end, and a " inside a '
            'quoted value is written "". Nothing was loaded.'
        )
    if error_type == "INVALID ENCODING":
        return (
            f"{path.name}: line {line} is not valid UTF-8, though the file was read as "
            f"{plan.encoding_label} ({plan.encoding_how}). Fix: set "
            f"{encoding_variable(spec.name)} to the file's encoding (or to auto, to detect "
            f"it), or convert the file to UTF-8: {_iconv_hint(path)}. Nothing was loaded."
        )
    if error_type == "LINE SIZE OVER MAXIMUM":
        return (
            f"{path.name}: the row starting on line {line} is longer than "
            f"{MAX_RECORD_BYTES // (1024 * 1024)} MB. That is almost always a quote that is "
            'never closed: check the quotes from that line on (a " inside a quoted value is '
            'written ""). Nothing was loaded.'
        )
    return (
        f"{path.name}: line {line} could not be read ({error_type.lower()}: {message}). "
        "Check the line against docs/raw-data.md and re-export the file. Nothing was loaded."
    )


def _number_csv_rows(
    con: duckdb.DuckDBPyConnection, original: Path, readable: Path, n_bad: int
) -> None:
    """`_cw_numbered`: good and bad rows with `_source_row`, the 1-based data record number."""
    good_index = "rowid - (select coalesce(min(rowid), 0) from _cw_good) + 1"
    if n_bad == 0:
        con.execute(
            "create or replace temp view _cw_numbered as "
            f"select *, {good_index} as _source_row, cast(null as varchar) as _load_error, "
            "cast(null as varchar) as _raw_line from _cw_good"
        )
        return
    bad = con.execute("select line, start from _cw_bad order by line").fetchall()
    lines = [line for line, _ in bad]
    starts = [start for _, start in bad]
    blanks = _blank_lines_before(readable, starts)
    con.execute(
        "create or replace temp table _cw_bad_rows as "
        "select unnest(?::bigint[]) as line, unnest(?::bigint[]) as ordinal",
        [list(lines), [line - 1 - blank for line, blank in zip(lines, blanks, strict=True)]],
    )
    n_good = con.execute("select count(*) from _cw_good").fetchone()[0]
    total = n_good + n_bad
    low, high, distinct = con.execute(
        "select min(ordinal), max(ordinal), count(distinct ordinal) from _cw_bad_rows"
    ).fetchone()
    if low < 1 or high > total or distinct != n_bad:
        raise RawDataError(
            f"{original.name}: the malformed rows could not be numbered consistently (record "
            f"numbers {low}..{high} for {total} rows); a stray quote is the likely cause. "
            "Fix the quoting of the rows listed in the load log, or re-export the file."
        )
    good_columns = ", ".join(f"g.{c}" for c in _good_columns(con))
    bad_columns = ", ".join(f"cast(null as varchar) as {c}" for c in _good_columns(con))
    con.execute(
        "create or replace temp view _cw_numbered as "
        "with free as ("
        f"  select i as ordinal, row_number() over (order by i) as k from range(1, {total + 1}) "
        "  as r(i) where i not in (select ordinal from _cw_bad_rows)"
        "), good as ("
        f"  select *, {good_index} as k from _cw_good"
        ") "
        f"select {good_columns}, f.ordinal as _source_row, cast(null as varchar) as _load_error, "
        "cast(null as varchar) as _raw_line from good g join free f using (k) "
        f"union all select {bad_columns}, r.ordinal, b.load_error, b.raw_line "
        "from _cw_bad b join _cw_bad_rows r using (line)"
    )


def _good_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute("select column_name from (describe _cw_good)").fetchall()]


def _load_csv(
    con: duckdb.DuckDBPyConnection,
    item: _Planned,
    scratch: Callable[[], Path],
    log: Callable[[str], None],
) -> int:
    """Build `_loading` for a CSV file; return the number of malformed rows."""
    assert item.path is not None and item.csv is not None
    path, plan, spec = item.path, item.csv, item.spec
    variable = encoding_variable(spec.name)
    readable = path
    if plan.encoding != "utf-8":
        readable = scratch()
        _transcode(path, plan, readable, variable)
    if _has_mixed_line_ends(readable) and not _duckdb_reads(readable, plan):
        # Records ending in CRLF and in bare LF/CR both (rows appended by another program):
        # DuckDB's reader stops on them. Read a copy with every line end as LF (line breaks
        # inside quoted values become LF too).
        normalized = scratch()
        _normalize_line_ends(readable, normalized)
        readable = normalized
        log(f"{path.name}: mixes CRLF and LF line ends; read with every line end as LF")
    n_bad = _read_csv(con, path, readable, plan, spec)
    log(
        f"{path.name}: read as {plan.encoding_label} ({plan.encoding_how}), delimiter "
        f"{_delimiter_text(plan.delimiter, ', from the header')}"
    )
    _number_csv_rows(con, path, readable, n_bad)
    n_good = con.execute("select count(*) from _cw_good").fetchone()[0]
    if n_bad:
        first_start, first_error = con.execute(
            "select start, load_error from _cw_bad order by line limit 1"
        ).fetchone()
        first_physical = _line_at(readable, first_start)
        if n_good == 0:
            raise RawDataError(
                f"{path.name}: none of its {n_bad} row(s) has the header's "
                f"{len(plan.columns)} fields (line {first_physical}: {first_error}). The header "
                f"and the rows do not match: a different delimiter (the header uses "
                f"'{plan.delimiter}') or a wrong header. Fix: re-export the file. Nothing was "
                "loaded."
            )
        log(
            f"{path.name}: {n_bad} malformed row(s) kept with _load_error (first: line "
            f"{first_physical}, {first_error}); staging rejects them"
        )
    select_list = []
    for column in spec.columns:
        if column in plan.columns:
            select_list.append(f"c{plan.columns.index(column)} as {column}")
        else:
            select_list.append(f"cast(null as varchar) as {column}")
    con.execute(
        f"create or replace temp view _loading as select {', '.join(select_list)}, "
        "_source_row, _load_error, _raw_line from _cw_numbered"
    )
    return n_bad


def _drop_scratch_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("drop view if exists _loading")
    con.execute("drop view if exists _cw_numbered")
    for table in ("_cw_good", "_cw_bad", "_cw_bad_rows"):
        con.execute(f"drop table if exists {table}")


def _load_parquet(con: duckdb.DuckDBPyConnection, item: _Planned) -> None:
    assert item.path is not None
    select_list = []
    for column in item.spec.columns:
        if column in item.parquet_types:
            select_list.append(f"{_parquet_text(column, item.parquet_types[column])} as {column}")
        else:
            select_list.append(f"cast(null as varchar) as {column}")
    columns = ", ".join(select_list)
    empty_load_columns = "cast(null as varchar) as _load_error, cast(null as varchar) as _raw_line"
    path = _sql_path(item.path)
    try:
        if "file_row_number" not in item.parquet_types:
            con.execute(
                f"create or replace temp view _loading as select {columns}, "
                f"file_row_number + 1 as _source_row, {empty_load_columns} "
                f"from read_parquet('{path}', file_row_number = true)"
            )
            return
        # The file has a column of that name: number the rows by their order of insertion.
        con.execute(
            f"create or replace temp table _cw_good as select {columns} from read_parquet('{path}')"
        )
        con.execute(
            f"create or replace temp view _loading as select *, rowid - (select "
            f"coalesce(min(rowid), 0) from _cw_good) + 1 as _source_row, {empty_load_columns} "
            "from _cw_good"
        )
    except duckdb.Error as exc:
        raise RawDataError(_explain_read_error(item.path, exc)) from None


# --------------------------------------------------------------------------------------------
# The load
# --------------------------------------------------------------------------------------------


@dataclass
class _Recorded:
    """The bookkeeping row (status `loaded`) of a file that is in a raw table now."""

    file: str
    sha256: str
    size_bytes: int
    mtime_ns: int
    path: str
    verified_at: datetime
    rows: int
    malformed_rows: int
    encoding: str | None
    delimiter: str | None
    ignored_columns: list[str]


@dataclass
class _FileCheck:
    """What a load does with one file of the folder: `unchanged`, `new` or `changed`."""

    file: DeliveryFile
    action: str
    size_bytes: int
    mtime_ns: int
    sha256: str | None = None  # None: not read (size and modification time as recorded)
    verified_at: datetime | None = None  # when the hash was computed
    recorded: _Recorded | None = None


def _utc_naive(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC).replace(tzinfo=None)


def _check_file(file: DeliveryFile, recorded: _Recorded | None) -> _FileCheck:
    """Unchanged without reading it when its path, size and modification time are as recorded
    and it was last modified well before it was last hashed (so a change within the clock's
    resolution cannot hide: git's "racily clean" rule); otherwise its SHA-256 decides."""
    stat = file.path.stat()
    if (
        recorded is not None
        and recorded.path == str(file.path)
        and recorded.size_bytes == stat.st_size
        and recorded.mtime_ns == stat.st_mtime_ns
        and stat.st_mtime_ns / 1e9
        < recorded.verified_at.replace(tzinfo=UTC).timestamp() - RACY_SECONDS
    ):
        return _FileCheck(file, "unchanged", stat.st_size, stat.st_mtime_ns, recorded=recorded)
    verified_at = _utc_naive(time.time())
    sha = file_sha256(file.path)
    if recorded is None:
        action = "new"
    elif recorded.sha256 == sha:
        action = "unchanged"
    else:
        action = "changed"
    return _FileCheck(file, action, stat.st_size, stat.st_mtime_ns, sha, verified_at, recorded)


def _table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        con.execute(
            "select count(*) from duckdb_tables() where database_name = current_database() "
            "and schema_name = ? and table_name = ?",
            [schema, table],
        ).fetchone()[0]
    )


def _expected_columns(spec: SourceSpec) -> list[tuple[str, str]]:
    return [(column, "VARCHAR") for column in spec.columns] + [
        (column, "BIGINT" if column == "_source_row" else "VARCHAR") for column in LOAD_COLUMNS
    ]


def _needs_new_table(con: duckdb.DuckDBPyConnection, spec: SourceSpec) -> bool:
    """The raw table is missing, or was made by an older loader (other columns)."""
    columns = con.execute(
        "select column_name, data_type from duckdb_columns() where database_name = "
        "current_database() and schema_name = ? and table_name = ? order by column_index",
        [RAW_SCHEMA, spec.name],
    ).fetchall()
    return [tuple(c) for c in columns] != _expected_columns(spec)


def _recorded_files(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], _Recorded]:
    if not _table_exists(con, RAW_SCHEMA, "deliveries"):
        return {}
    rows = con.execute(
        f"select source, file, file_sha256, size_bytes, mtime_ns, path, verified_at, rows, "
        f"malformed_rows, encoding, delimiter, ignored_columns from {DELIVERIES_TABLE} "
        f"where status = '{LOADED}'"
    ).fetchall()
    return {
        (row[0], row[1]): _Recorded(
            *row[1:11], ignored_columns=[c for c in (row[11] or "").split(",") if c]
        )
        for row in rows
    }


def _plan_file(
    con: duckdb.DuckDBPyConnection, check: _FileCheck, spec: SourceSpec, setting: str
) -> _Planned:
    """Structure checks of one file to load (nothing is written)."""
    path = check.file.path
    with _named(check.file):
        if path.suffix.lower() == ".csv":
            csv_plan = _plan_csv(path, spec, setting)
            ignored = _check_columns(path, spec, csv_plan.columns, csv_plan.delimiter)
            return _Planned(spec, path, csv_plan.columns, ignored, csv=csv_plan, check=check)
        types = _parquet_schema(con, path)
        ignored = _check_columns(path, spec, list(types))
        _check_parquet_types(path, spec, types)
        return _Planned(spec, path, list(types), ignored, parquet_types=types, check=check)


@contextmanager
def _named(file: DeliveryFile) -> Iterator[None]:
    """A delivery in a folder is named with its folder in messages (`orders/2025-01-14.csv`)."""
    try:
        yield
    except RawDataError as exc:
        text = str(exc)
        if file.name != file.path.name and text.startswith(file.path.name):
            raise RawDataError(file.name + text[len(file.path.name) :]) from None
        raise


def _named_log(file: DeliveryFile, log: Callable[[str], None]) -> Callable[[str], None]:
    if file.name == file.path.name:
        return log

    def named(line: str) -> None:
        log(file.name + line[len(file.path.name) :] if line.startswith(file.path.name) else line)

    return named


def load_raw(
    con: duckdb.DuckDBPyConnection,
    raw_dir: Path,
    *,
    log: Callable[[str], None] = print,
    encodings: Mapping[str, str] | None = None,
    erasures: Sequence[privacy.ErasureRequest] | None = None,
) -> list[LoadedSource]:
    """Load what is new or changed in `raw_dir` into the raw tables, in one transaction.

    Every file is checked (structure, encoding) before anything is written. A file recorded in
    raw.deliveries with the same content is not read again; a new file adds its rows; a changed
    file (same name, other content) replaces its own rows; a file that is gone takes its rows
    out. A stop (RawDataError) leaves every raw table as it was.

    `encodings`: {source: Python codec or "auto"}; by default the CW_RAW_ENCODING* variables.
    `erasures`: customers whose personal values never enter a raw table (docs/privacy.md); by
    default the requests in `raw_dir/erasure_requests.csv`. They are recorded in
    `raw.erasure_requests` in the same transaction, and rows loaded before the request are
    blanked too.
    """
    if encodings is None:
        encodings = parse_raw_encodings()
    if erasures is None:
        erasures = privacy.read_erasure_requests(raw_dir)
    started = time.perf_counter()
    layouts = {spec.name: find_deliveries(raw_dir, spec) for spec in SOURCES}
    recorded = _recorded_files(con)
    new_tables = {spec.name for spec in SOURCES if _needs_new_table(con, spec)}
    checks: dict[str, list[_FileCheck]] = {}
    gone: dict[str, list[str]] = {}
    for spec in SOURCES:
        files, ignored = layouts[spec.name]
        for name in ignored:
            log(f"{name}: not a .csv or .parquet delivery; ignored")
        known = {} if spec.name in new_tables else {
            file: record for (source, file), record in recorded.items() if source == spec.name
        }  # fmt: skip
        checks[spec.name] = [_check_file(file, known.get(file.name)) for file in files]
        present = {file.name for file in files}
        gone[spec.name] = sorted(set(known) - present)
    planned = [
        _plan_file(con, check, SOURCES_BY_NAME[source], encodings.get(source, ENCODING_AUTO))
        for source, source_checks in checks.items()
        for check in source_checks
        if check.action != "unchanged"
    ]
    erased = _erased_ids(con, erasures)
    if privacy.register_erased_ids(con, erased):
        log(f"erasure requests: personal values of {len(erased)} customer(s) are not loaded")

    con.execute(f"create schema if not exists {RAW_SCHEMA}")
    results: list[LoadedSource] = []
    with ExitStack() as stack:
        scratch_dir: list[Path] = []
        numbers = itertools.count(1)

        def scratch() -> Path:
            """A new path for a transcoded file; the folder goes when the load ends."""
            if not scratch_dir:
                folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="cw-raw-"))
                scratch_dir.append(Path(folder))
            return scratch_dir[0] / f"transcoded-{next(numbers)}.csv"

        con.execute("begin transaction")
        try:
            con.execute(_DELIVERIES_DDL)
            for spec in SOURCES:
                source_started = time.perf_counter()
                if spec.name in new_tables:
                    _create_raw_table(con, spec, recorded, log)
                for file in gone[spec.name]:
                    _remove_file(con, spec, file)
                items = [item for item in planned if item.spec is spec]
                for item in items:
                    _load_one(con, item, scratch, log)
                for check in checks[spec.name]:
                    if check.action == "unchanged" and check.sha256 is not None:
                        _record_unchanged(con, check)
                results.append(
                    _source_result(con, spec, layouts[spec.name][0], checks[spec.name], gone)
                )
                _log_source(results[-1], time.perf_counter() - source_started, log)
            new = privacy.record_erasure_requests(con, erasures)
            if new:
                log(f"erasure requests: {new} new customer(s) recorded in raw.erasure_requests")
            _scrub_erased(con)
            _write_manifest(con)
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
    log(f"raw load done in {time.perf_counter() - started:.1f}s")
    return results


def _erased_ids(
    con: duckdb.DuckDBPyConnection, requests: Sequence[privacy.ErasureRequest]
) -> list[privacy.ErasureRequest]:
    """The requests of the file and every request recorded before: a request stays in force
    after its file is gone, so a later delivery cannot bring the values back."""
    known = {request.customer_id for request in requests}
    earlier: list[privacy.ErasureRequest] = []
    if _table_exists(con, RAW_SCHEMA, "erasure_requests"):
        earlier = [
            privacy.ErasureRequest(customer_id, requested_at)
            for customer_id, requested_at in con.execute(
                f"select customer_id, requested_at from {privacy.ERASURE_TABLE}"
            ).fetchall()
            if customer_id not in known
        ]
    return [*requests, *earlier]


def _create_raw_table(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    recorded: Mapping[tuple[str, str], _Recorded],
    log: Callable[[str], None],
) -> None:
    """A new, empty raw table; files recorded for the old one are loaded again."""
    forgotten = [file for source, file in recorded if source == spec.name]
    if _table_exists(con, RAW_SCHEMA, spec.name):
        log(f"raw.{spec.name}: made by an older loader (other columns); every file is read again")
    columns = ", ".join(f"{name} {dtype}" for name, dtype in _expected_columns(spec))
    con.execute(f"create or replace table {RAW_SCHEMA}.{spec.name} ({columns})")
    if forgotten:
        con.execute(
            f"update {DELIVERIES_TABLE} set status = '{REMOVED}', status_changed_at = {_NOW} "
            f"where source = ? and status = '{LOADED}'",
            [spec.name],
        )


def _remove_file(con: duckdb.DuckDBPyConnection, spec: SourceSpec, file: str) -> None:
    """A file that is no longer in the folder: its rows leave the raw table."""
    con.execute(f"delete from {RAW_SCHEMA}.{spec.name} where _source_file = ?", [file])
    con.execute(
        f"update {DELIVERIES_TABLE} set status = '{REMOVED}', status_changed_at = {_NOW} "
        f"where source = ? and file = ? and status = '{LOADED}'",
        [spec.name, file],
    )


def _load_one(
    con: duckdb.DuckDBPyConnection,
    item: _Planned,
    scratch: Callable[[], Path],
    log: Callable[[str], None],
) -> None:
    """Replace the rows of one file (new or changed) in its raw table and record it."""
    check = item.check
    assert check is not None and check.sha256 is not None and check.verified_at is not None
    spec, file = item.spec, check.file
    malformed = 0
    with _named(file):
        if item.csv is not None:
            malformed = _load_csv(con, item, scratch, _named_log(file, log))
        else:
            _load_parquet(con, item)
        table = f"{RAW_SCHEMA}.{spec.name}"
        con.execute(f"delete from {table} where _source_file = ?", [file.name])
        try:
            con.execute(
                f"insert into {table} select {', '.join(_scrubbed_columns(spec))}, "
                "? as _source_file, cast(_source_row as bigint) as _source_row, _load_error, "
                "_raw_line, ? as _delivery, ? as _file_sha256 from _loading order by _source_row",
                [file.name, file.delivery, check.sha256],
            )
        except duckdb.Error as exc:
            raise RawDataError(_explain_read_error(file.path, exc)) from None
    if malformed:  # a malformed line has no parsed customer_id: blank it if it names one
        con.execute(
            f"update {table} set _raw_line = null where _source_file = ? "
            f"and _load_error is not null and {privacy.mentions_erased_id('_raw_line')}",
            [file.name],
        )
    _drop_scratch_tables(con)
    rows = con.execute(
        f"select count(*) from {table} where _source_file = ?", [file.name]
    ).fetchone()[0]
    con.execute(
        f"update {DELIVERIES_TABLE} set status = '{REPLACED}', status_changed_at = {_NOW} "
        f"where source = ? and file = ? and status = '{LOADED}'",
        [spec.name, file.name],
    )
    con.execute(
        f"delete from {DELIVERIES_TABLE} where source = ? and file = ? and file_sha256 = ?",
        [spec.name, file.name, check.sha256],
    )
    con.execute(
        f"insert into {DELIVERIES_TABLE} values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
        f"{_NOW}, ?, '{LOADED}', null)",
        [
            spec.name,
            file.name,
            file.delivery,
            check.sha256,
            check.size_bytes,
            _utc_naive(check.mtime_ns / 1e9),
            check.mtime_ns,
            str(file.path),
            rows,
            malformed,
            item.csv.encoding_label if item.csv else None,
            item.csv.delimiter if item.csv else None,
            ",".join(item.ignored),
            check.verified_at,
        ],
    )


def _record_unchanged(con: duckdb.DuckDBPyConnection, check: _FileCheck) -> None:
    """A file read again with the same content (touched, copied, moved): remember where and
    when, so the next load need not read it."""
    con.execute(
        f"update {DELIVERIES_TABLE} set path = ?, size_bytes = ?, mtime_ns = ?, "
        f"modified_at = ?, verified_at = ? where source = ? and file = ? and status = '{LOADED}'",
        [
            str(check.file.path),
            check.size_bytes,
            check.mtime_ns,
            _utc_naive(check.mtime_ns / 1e9),
            check.verified_at,
            check.file.source,
            check.file.name,
        ],
    )


def _source_result(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    files: list[DeliveryFile],
    checks: list[_FileCheck],
    gone: Mapping[str, list[str]],
) -> LoadedSource:
    rows = con.execute(f"select count(*) from {RAW_SCHEMA}.{spec.name}").fetchone()[0]
    records = con.execute(
        f"select encoding, delimiter, ignored_columns, malformed_rows from {DELIVERIES_TABLE} "
        f"where source = ? and status = '{LOADED}' order by delivery",
        [spec.name],
    ).fetchall()
    ignored: list[str] = []
    for record in records:
        ignored += [c for c in (record[2] or "").split(",") if c and c not in ignored]
    encodings = sorted({r[0] for r in records if r[0]})
    delimiters = sorted({r[1] for r in records if r[1]})
    if not files:
        label = None
    elif len(files) == 1 and files[0].name == files[0].path.name:
        label = files[0].name
    else:
        label = f"{spec.name}/"
    return LoadedSource(
        spec.name,
        label,
        rows,
        ignored,
        encoding=", ".join(encodings) or None,
        delimiter="".join(delimiters) or None,
        malformed_rows=sum(r[3] or 0 for r in records),
        deliveries=len(files),
        new_files=[c.file.name for c in checks if c.action == "new"],
        changed_files=[c.file.name for c in checks if c.action == "changed"],
        removed_files=list(gone[spec.name]),
        unchanged_files=[c.file.name for c in checks if c.action == "unchanged"],
    )


def _log_source(result: LoadedSource, seconds: float, log: Callable[[str], None]) -> None:
    note = f" (ignored columns: {', '.join(result.ignored_columns)})"
    note = note if result.ignored_columns else ""
    if result.malformed_rows:
        note += f" ({result.malformed_rows:,} malformed)"
    if result.file is None:
        source_label = "no file: empty table"
    elif result.file.endswith("/"):
        source_label = (
            f"{result.file}: {result.deliveries} deliveries ({len(result.new_files)} new, "
            f"{len(result.changed_files)} changed, {len(result.unchanged_files)} unchanged, "
            f"{len(result.removed_files)} removed)"
        )
    else:
        source_label = result.file + (
            " (unchanged: not loaded again)" if result.unchanged_files else ""
        )
    if result.removed_files and not result.file:
        source_label = f"no file: {', '.join(result.removed_files)} removed, empty table"
    log(
        f"raw.{result.source:<12} {result.rows:>12,} rows  from {source_label}  "
        f"[{seconds:.1f}s]{note}"
    )


def _scrubbed_columns(spec: SourceSpec) -> list[str]:
    """The contract's columns; personal ones (seeds/personal_columns.csv) null for a customer
    with an erasure request, so the value never reaches a table (docs/privacy.md)."""
    if "customer_id" not in spec.columns:
        return list(spec.columns)
    return [
        f"{privacy.scrubbed(column)} as {column}" if privacy.is_personal(column) else column
        for column in spec.columns
    ]


def _scrub_erased(con: duckdb.DuckDBPyConnection) -> None:
    """Rows loaded before an erasure request: their personal values (and a malformed line that
    names the customer) are blanked in place. A no-op once done."""
    for spec in SOURCES:
        table = f"{RAW_SCHEMA}.{spec.name}"
        personal = [c for c in spec.columns if privacy.is_personal(c)]
        if personal and "customer_id" in spec.columns:
            con.execute(
                f"update {table} set {', '.join(f'{c} = null' for c in personal)} "
                f"where trim(customer_id) in (select customer_id from {privacy.ERASED_IDS}) "
                f"and ({' or '.join(f'{c} is not null' for c in personal)})"
            )
        con.execute(
            f"update {table} set _raw_line = null where _load_error is not null "
            f"and _raw_line is not null and {privacy.mentions_erased_id('_raw_line')}"
        )


def _explain_read_error(path: Path | None, exc: duckdb.Error) -> str:
    name = path.name if path else "?"
    text = str(exc).splitlines()[0]
    lowered = str(exc).lower()
    if "unicode" in lowered or "utf" in lowered or "encoding" in lowered:
        fix = (
            f"Set {encoding_variable(path.stem) if path else 'CW_RAW_ENCODING'} to the file's "
            "encoding, or convert it, e.g. `iconv -f GB18030 -t UTF-8 in > out`."
        )
    else:
        fix = "Check the file against docs/raw-data.md and re-export it."
    return f"{name}: could not be read ({text}). {fix} Nothing was loaded."


def _write_manifest(con: duckdb.DuckDBPyConnection) -> None:
    """`raw.load_manifest`: every file in a raw table now (rows, ignored columns, encoding,
    delimiter, malformed rows, when it was loaded), and a row without a file for a source that
    has none."""
    absent = " union all ".join(f"select '{spec.name}' as source" for spec in SOURCES)
    con.execute(
        f"create or replace table {RAW_SCHEMA}.load_manifest as "
        "select source, file, rows, ignored_columns, encoding, delimiter, malformed_rows, "
        f"loaded_at from {DELIVERIES_TABLE} where status = '{LOADED}' "
        "union all select source, cast(null as varchar), 0, '', cast(null as varchar), "
        f"cast(null as varchar), 0, {_NOW} from ({absent}) as sources "
        f"where source not in (select source from {DELIVERIES_TABLE} where status = '{LOADED}')"
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
    with duckdb.connect(str(settings.warehouse_path), config=settings.duckdb_config) as con:
        results = load_raw(con, settings.raw_dir, log=log, encodings=settings.raw_encodings)
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
