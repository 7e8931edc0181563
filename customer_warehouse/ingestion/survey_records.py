"""Reading and validating survey files (the rules are in the docstring of
``customer_warehouse.ingestion.surveys``): a file's bytes become typed responses and rejected
records with their reason. Reads the bytes it is given; writes nothing.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

KNOWN_NEED_TAGS: frozenset[str] = frozenset(
    {"quality", "price", "service", "customization", "delivery"}
)


#: Reject reasons in the order they are checked (the first that applies is recorded).
REJECT_REASONS: tuple[str, ...] = (
    "record_not_an_object",  # JSON array element that is not an object
    "wrong_field_count",  # CSV row with more or fewer cells than the header
    "missing_customer_id",
    "invalid_customer_id",  # JSON customer_id that is neither text nor an integer
    "unparseable_submitted_at",  # empty or not ISO 8601
    "future_submitted_at",
    "missing_scores",  # nps and satisfaction both empty
    "nps_not_integer",
    "nps_out_of_range",
    "satisfaction_not_integer",
    "satisfaction_out_of_range",
    "invalid_need_tags",  # JSON need_tags that is neither a string nor a list of strings
    "duplicate_response_id",
)


REQUIRED_COLUMNS: tuple[str, ...] = ("customer_id", "submitted_at", "nps", "satisfaction")
OPTIONAL_COLUMNS: tuple[str, ...] = ("response_id", "comment", "need_tags")
NPS_RANGE = (0, 10)
SATISFACTION_RANGE = (1, 5)


class SurveyFileError(Exception):
    """A whole file cannot be read; the message names the file, the problem and the fix."""


@dataclass
class Parsed:
    """Outcome of validating one file's records (nothing written yet)."""

    rows: int
    accepted: list[dict[str, Any]]
    rejected: list[dict[str, Any]]


def parse_file(name: str, data: bytes, now_utc: datetime, tz: ZoneInfo) -> Parsed:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SurveyFileError(
            f"Survey file {name!r} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at "
            f"position {exc.start}). Export it again as UTF-8 (e.g. 'CSV UTF-8' in Excel) and "
            "put the new file in the surveys folder."
        ) from exc
    records = (
        _read_json_records(name, text)
        if name.lower().endswith(".json")
        else _read_csv_records(name, text)
    )
    accepted: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    rows = 0
    for source_row, record, raw_record, structural_reason in records:
        rows += 1
        if structural_reason is not None:
            rejected.append(rejected_row(source_row, raw_record, structural_reason))
            continue
        result = _validate(name, source_row, record, now_utc, tz)
        if isinstance(result, str):
            rejected.append(rejected_row(source_row, raw_record, result))
        elif result["response_id"] in seen_ids:
            rejected.append(rejected_row(source_row, raw_record, "duplicate_response_id"))
        else:
            seen_ids.add(result["response_id"])
            result["_raw"] = raw_record
            accepted.append(result)
    return Parsed(rows=rows, accepted=accepted, rejected=rejected)


_Record = tuple[int, Mapping[str, Any], str, str | None]


def _read_json_records(name: str, text: str) -> Iterator[_Record]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SurveyFileError(
            f"Survey file {name!r} is not valid JSON: {exc.msg} at line {exc.lineno}, column "
            f"{exc.colno}. Fix the file (it must be one JSON array of response objects) and put "
            "it back in the surveys folder."
        ) from exc
    if not isinstance(document, list):
        raise SurveyFileError(
            f"Survey file {name!r} holds a JSON {type(document).__name__}, not an array. "
            'Write the responses as one array of objects: [{"customer_id": ..., '
            '"submitted_at": ..., "nps": ..., "satisfaction": ...}, ...].'
        )
    for index, element in enumerate(document, start=1):
        raw = json.dumps(element, ensure_ascii=False)
        if not isinstance(element, dict):
            yield index, {}, raw, "record_not_an_object"
        else:
            yield index, {str(k).strip().lower(): v for k, v in element.items()}, raw, None


def _read_csv_records(name: str, text: str) -> Iterator[_Record]:
    # strict: an unterminated quote fails the file instead of silently swallowing the rows
    # that follow it into one field.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise SurveyFileError(
                f"Survey file {name!r} is empty: it has no header row. Export it again with "
                f"a header naming at least {', '.join(REQUIRED_COLUMNS)}."
            )
        columns = [c.strip().lower() for c in header]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise SurveyFileError(
                f"Survey file {name!r} lacks the required column(s) {', '.join(missing)} "
                f"(header found: {', '.join(header) or 'empty'}). Add them to the header "
                f"(required: {', '.join(REQUIRED_COLUMNS)}; optional: "
                f"{', '.join(OPTIONAL_COLUMNS)}) and put the file back."
            )
        duplicated = sorted({c for c in columns if columns.count(c) > 1 and c})
        if duplicated:
            raise SurveyFileError(
                f"Survey file {name!r} has the column(s) {', '.join(duplicated)} more than "
                "once in its header. Keep one column of each name and put the file back."
            )
        # Materialized before yielding so a csv.Error half-way fails the whole file, not a
        # prefix of it (a file is all-or-nothing).
        records: list[_Record] = []
        source_row = 0
        for cells in reader:
            if not cells:
                continue  # blank line: not a record
            source_row += 1
            record = dict(zip(columns, cells, strict=False))
            raw: dict[str, Any] = dict(zip(header, cells, strict=False))
            reason = None
            if len(cells) != len(columns):
                reason = "wrong_field_count"
                if len(cells) > len(columns):
                    raw["_extra_cells"] = cells[len(columns) :]
            records.append((source_row, record, json.dumps(raw, ensure_ascii=False), reason))
    except csv.Error as exc:
        raise SurveyFileError(
            f"Survey file {name!r} is not a readable CSV (line {reader.line_num}: {exc}). "
            "Check the quotes around that line (every opening quote needs a closing one), export "
            "it again and put it back."
        ) from exc
    yield from records


def _validate(
    file_name: str,
    source_row: int,
    record: Mapping[str, Any],
    now_utc: datetime,
    tz: ZoneInfo,
) -> dict[str, Any] | str:
    """The typed response, or the reject reason (a string)."""
    customer = record.get("customer_id")
    if isinstance(customer, bool) or not isinstance(customer, str | int | type(None)):
        return "invalid_customer_id"
    customer_id = _blank_to_none(customer)
    if customer_id is None:
        return "missing_customer_id"

    submitted_at = _parse_timestamp(record.get("submitted_at"), tz)
    if submitted_at is None:
        return "unparseable_submitted_at"
    if submitted_at > now_utc:
        return "future_submitted_at"

    nps_raw, sat_raw = record.get("nps"), record.get("satisfaction")
    if _is_empty(nps_raw) and _is_empty(sat_raw):
        return "missing_scores"
    nps = _parse_int(nps_raw)
    if nps is _NOT_INT:
        return "nps_not_integer"
    if nps is not None and not NPS_RANGE[0] <= nps <= NPS_RANGE[1]:
        return "nps_out_of_range"
    satisfaction = _parse_int(sat_raw)
    if satisfaction is _NOT_INT:
        return "satisfaction_not_integer"
    if (
        satisfaction is not None
        and not SATISFACTION_RANGE[0] <= satisfaction <= SATISFACTION_RANGE[1]
    ):
        return "satisfaction_out_of_range"

    tags = _split_tags(record.get("need_tags"))
    if tags is None:
        return "invalid_need_tags"
    known = sorted({t for t in tags if t in KNOWN_NEED_TAGS})
    unknown = sorted({t for t in tags if t not in KNOWN_NEED_TAGS})

    response_id = _blank_to_none(record.get("response_id"))
    comment = record.get("comment")
    comment = comment if isinstance(comment, str) else None if comment is None else str(comment)
    return {
        "response_id": response_id or f"{file_name}#{source_row}",
        "customer_id": customer_id,
        "submitted_at": submitted_at,
        "nps": nps,
        "satisfaction": satisfaction,
        "comment": _blank_to_none(comment),
        "need_tags": "|".join(known) or None,
        "unknown_need_tags": "|".join(unknown) or None,
        "source_row": source_row,
    }


def rejected_row(source_row: int, raw_record: str, reason: str) -> dict[str, Any]:
    return {"source_row": source_row, "raw_record": raw_record, "reject_reason": reason}


_NOT_INT = object()  # sentinel: present but not an integer


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _blank_to_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _parse_int(value: Any) -> Any:
    """int, None when empty, or ``_NOT_INT``. ``7``, ``"7"``, ``7.0`` and ``"7.0"`` are 7."""
    if _is_empty(value):
        return None
    if isinstance(value, bool):
        return _NOT_INT
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else _NOT_INT
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return _NOT_INT
        return int(number) if math.isfinite(number) and number.is_integer() else _NOT_INT
    return _NOT_INT


def _parse_timestamp(value: Any, tz: ZoneInfo) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return to_utc_naive(parsed, tz)


def to_utc_naive(value: datetime, naive_tz: ZoneInfo) -> datetime:
    """UTC wall-clock time without tzinfo (what a DuckDB TIMESTAMP column holds)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=naive_tz)
    return value.astimezone(UTC).replace(tzinfo=None)


def _split_tags(value: Any) -> list[str] | None:
    """Lower-case, stripped tags; [] when none; None when the value has an unusable type."""
    if value is None:
        return []
    if isinstance(value, str):
        parts = value.split("|")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        parts = [piece for v in value for piece in v.split("|")]
    else:
        return None
    return [p.strip().lower() for p in parts if p.strip()]
