"""Load the raw exports in CW_RAW_DIR into the `raw` schema, every column as text.

This is the raw-data contract (docs/raw-data.md) in code. Only structure is checked here. A
whole-file problem (an empty file, a missing required column, bytes that decode in no supported
encoding, a quote that is never closed, a Parquet column that holds no plain value) stops the
load with a `RawDataError` naming the file, the line where it applies and the fix, before any
table is replaced. Everything else loads:

* the encoding is detected (UTF-8 with or without BOM, UTF-16 with BOM, GB18030) or configured
  (`CW_RAW_ENCODING`, `CW_RAW_ENCODING_<SOURCE>`); a file that is not UTF-8 is transcoded to a
  temporary UTF-8 file in a streaming way and that is loaded;
* the delimiter (`,`, `;`, tab, `|`) is detected from the header;
* a row with more or fewer fields than the header, or with broken quoting confined to its line,
  is kept: all contract columns NULL, `_load_error` says why and `_raw_line` holds the line;
* a field of several megabytes loads as text (staging quarantines it as `oversized_field`).

Bad *values* are not this module's business: they travel as text to dbt staging, which
quarantines each bad row with a reason (staging.*_rejects).

Every raw table has the contract's columns (text), then `_source_file`, `_source_row` (the
1-based number of the data record in the file: the header and blank lines do not count, a
malformed row does), `_load_error` and `_raw_line` (both NULL for a good row).

All tables are replaced in one transaction, so a failed load leaves the previous raw tables
(and everything downstream) as they were, and loading the same files twice gives the same
tables.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import itertools
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
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
LOAD_COLUMNS = ("_source_file", "_source_row", "_load_error", "_raw_line")
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
    source: str
    file: str | None
    rows: int
    ignored_columns: list[str] = field(default_factory=list)
    encoding: str | None = None  # CSV: how the file was decoded, e.g. "GB18030"
    delimiter: str | None = None  # CSV: the field delimiter found in the header
    malformed_rows: int = 0  # rows loaded with a `_load_error`


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


# --------------------------------------------------------------------------------------------
# Finding the files
# --------------------------------------------------------------------------------------------


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


def _load_empty(con: duckdb.DuckDBPyConnection, spec: SourceSpec) -> None:
    cols = ", ".join(f"cast(null as varchar) as {c}" for c in spec.columns)
    con.execute(
        f"create or replace temp view _loading as select {cols}, "
        "cast(null as bigint) as _source_row, cast(null as varchar) as _load_error, "
        "cast(null as varchar) as _raw_line where false"
    )


# --------------------------------------------------------------------------------------------
# The load
# --------------------------------------------------------------------------------------------


def plan_load(
    con: duckdb.DuckDBPyConnection, raw_dir: Path, encodings: Mapping[str, str]
) -> list[_Planned]:
    """Check every file's structure before loading any: header and columns, encoding (the
    whole file when it is detected), Parquet schema and types."""
    plan: list[_Planned] = []
    for spec in SOURCES:
        path = find_source_file(raw_dir, spec)
        if path is None:
            plan.append(_Planned(spec, None, [], []))
        elif path.suffix == ".csv":
            csv_plan = _plan_csv(path, spec, encodings.get(spec.name, ENCODING_AUTO))
            ignored = _check_columns(path, spec, csv_plan.columns, csv_plan.delimiter)
            plan.append(_Planned(spec, path, csv_plan.columns, ignored, csv=csv_plan))
        else:
            types = _parquet_schema(con, path)
            ignored = _check_columns(path, spec, list(types))
            _check_parquet_types(path, spec, types)
            plan.append(_Planned(spec, path, list(types), ignored, parquet_types=types))
    return plan


def load_raw(
    con: duckdb.DuckDBPyConnection,
    raw_dir: Path,
    *,
    log: Callable[[str], None] = print,
    encodings: Mapping[str, str] | None = None,
    erasures: Sequence[privacy.ErasureRequest] | None = None,
) -> list[LoadedSource]:
    """Check every contract file in `raw_dir`, then replace the raw tables in one transaction.

    `encodings`: {source: Python codec or "auto"}; by default the CW_RAW_ENCODING* variables.
    `erasures`: customers whose personal values never enter a raw table (docs/privacy.md); by
    default the requests in `raw_dir/erasure_requests.csv`. They are recorded in
    `raw.erasure_requests` in the same transaction.
    """
    if encodings is None:
        encodings = parse_raw_encodings()
    if erasures is None:
        erasures = privacy.read_erasure_requests(raw_dir)
    plan = plan_load(con, raw_dir, encodings)
    if privacy.register_erased_ids(con, erasures):
        log(f"erasure requests: personal values of {len(erasures)} customer(s) are not loaded")

    results: list[LoadedSource] = []
    con.execute(f"create schema if not exists {RAW_SCHEMA}")
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
            for item in plan:
                results.append(_load_one(con, item, scratch, log))
            _write_manifest(con, results)
            new = privacy.record_erasure_requests(con, erasures)
            if new:
                log(f"erasure requests: {new} new customer(s) recorded in raw.erasure_requests")
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
    return results


def _load_one(
    con: duckdb.DuckDBPyConnection,
    item: _Planned,
    scratch: Callable[[], Path],
    log: Callable[[str], None],
) -> LoadedSource:
    started = time.perf_counter()
    spec, path = item.spec, item.path
    malformed = 0
    if path is None:
        _load_empty(con, spec)
    elif item.csv is not None:
        malformed = _load_csv(con, item, scratch, log)
    else:
        _load_parquet(con, item)
    file_name = path.name.replace("'", "''") if path else ""
    try:
        con.execute(
            f"create or replace table {RAW_SCHEMA}.{spec.name} as "
            f"select {', '.join(_scrubbed_columns(spec))}, '{file_name}' as _source_file, "
            "cast(_source_row as bigint) as _source_row, _load_error, _raw_line "
            "from _loading order by _source_row"
        )
    except duckdb.Error as exc:
        raise RawDataError(_explain_read_error(path, exc)) from None
    if malformed:  # a malformed line has no parsed customer_id: blank it if it names one
        con.execute(
            f"update {RAW_SCHEMA}.{spec.name} set _raw_line = null "
            f"where _load_error is not null and {privacy.mentions_erased_id('_raw_line')}"
        )
    _drop_scratch_tables(con)
    rows = con.execute(f"select count(*) from {RAW_SCHEMA}.{spec.name}").fetchone()[0]
    note = f" (ignored columns: {', '.join(item.ignored)})" if item.ignored else ""
    if malformed:
        note += f" ({malformed:,} malformed)"
    source_label = path.name if path else "no file: empty table"
    log(
        f"raw.{spec.name:<12} {rows:>12,} rows  from {source_label}"
        f"  [{time.perf_counter() - started:.1f}s]{note}"
    )
    return LoadedSource(
        spec.name,
        path.name if path else None,
        rows,
        item.ignored,
        encoding=item.csv.encoding_label if item.csv else None,
        delimiter=item.csv.delimiter if item.csv else None,
        malformed_rows=malformed,
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


def _write_manifest(con: duckdb.DuckDBPyConnection, results: list[LoadedSource]) -> None:
    con.execute(
        f"create or replace table {RAW_SCHEMA}.load_manifest ("
        "source varchar, file varchar, rows bigint, ignored_columns varchar, "
        "encoding varchar, delimiter varchar, malformed_rows bigint, loaded_at timestamp)"
    )
    con.executemany(
        f"insert into {RAW_SCHEMA}.load_manifest values (?, ?, ?, ?, ?, ?, ?, "
        "cast(current_timestamp at time zone 'UTC' as timestamp))",
        [
            (
                r.source,
                r.file,
                r.rows,
                ",".join(r.ignored_columns),
                r.encoding,
                r.delimiter,
                r.malformed_rows,
            )
            for r in results
        ],
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
