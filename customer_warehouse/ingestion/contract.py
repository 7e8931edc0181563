"""The raw-data contract in code (docs/raw-data.md): the sources, their required and optional
columns, the load columns every raw table ends with, the limits of a record, and the error a
structurally broken file raises. Reads and writes nothing.

Each source is either one full export (`orders.csv` or `orders.parquet`) or a folder of
deliveries over time (`orders/` with `2025-01-14.csv`, `2025-01-15.parquet`, ...: each file one
delivery, ordered by its name); both at once is refused. Only structure is checked on loading.
A whole-file problem (an empty file, a missing required column, bytes that decode in no
supported encoding, a quote that is never closed, a Parquet column that holds no plain value)
stops the load with a `RawDataError` naming the file, the line where it applies and the fix,
before any table is changed. Everything else loads:

* the encoding is detected (UTF-8 with or without BOM, UTF-16 with BOM, GB18030) or configured
  (`CW_RAW_ENCODING`, `CW_RAW_ENCODING_<SOURCE>`); a file that is not UTF-8 is transcoded to a
  temporary UTF-8 file in a streaming way and that is loaded;
* the delimiter (`,`, `;`, tab, `|`) is detected from the header;
* a row with more or fewer fields than the header, or with broken quoting confined to its line,
  is kept: all contract columns NULL, `_load_error` says why and `_raw_line` holds the line;
* a field of several megabytes loads as text (staging quarantines it as `oversized_field`).

Bad *values* are not the loader's business: they travel as text to dbt staging, which
quarantines each bad row with a reason (staging.*_rejects) and lets the latest delivery of a
row win over older copies (staging.superseded_*).

Every raw table has the contract's columns (text), then `_source_file` (`orders.csv`, or
`orders/2025-01-14.csv` for a delivery), `_source_row` (the 1-based number of the data record
in the file: the header and blank lines do not count, a malformed row does), `_load_error` and
`_raw_line` (both NULL for a good row), `_delivery` (the delivery's sort label: the file name
without its suffix) and `_file_sha256` (the content the row came from).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
# `_load_error` codes (staging rejects every such row as `malformed_row`).
TOO_MANY_FIELDS = "too_many_fields"
TOO_FEW_FIELDS = "too_few_fields"
BAD_QUOTING = "bad_quoting"
# A single CSV record (a line, or several when a quoted value holds line breaks) may be this
# long. Far above any real row, so a field of several megabytes loads (and staging quarantines
# it); a longer record is almost always a quote that is never closed.
MAX_RECORD_BYTES = 256 * 1024 * 1024
HEAD_BYTES = 1024 * 1024  # read to detect the encoding and to find the header line
CHUNK_BYTES = 4 * 1024 * 1024  # streaming transcoding and scanning


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


def expected_columns(spec: SourceSpec) -> list[tuple[str, str]]:
    return [(column, "VARCHAR") for column in spec.columns] + [
        (column, "BIGINT" if column == "_source_row" else "VARCHAR") for column in LOAD_COLUMNS
    ]
