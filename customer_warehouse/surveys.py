"""Survey files (``CW_RAW_DIR/surveys/*.csv|*.json``) → ``raw.survey_responses``.

Why this is Python and not a dbt model: survey files arrive one by one (a sensor picks them
up), each must be ingested exactly once, and a broken file must be reported by name without
stopping the others. That needs per-file bookkeeping and transactions, which SQL models do not
give. dbt stages the result (``models/staging/surveys``) and computes NPS and satisfaction.

Tables (schema ``raw``, created when absent):

``raw.survey_responses``
    One row per accepted response, typed: response_id, customer_id, submitted_at (TIMESTAMP,
    UTC), nps (INTEGER 0-10 or NULL), satisfaction (INTEGER 1-5 or NULL), comment, need_tags,
    unknown_need_tags, source_file, source_row, file_sha256, ingested_at.
``raw.survey_rejects``
    One row per refused response: source_file, source_row, file_sha256, raw_record (the record
    as JSON text, exactly as read), reject_reason, ingested_at.
``raw.survey_files``
    One row per (file name, content sha256) ever seen: source_file, file_sha256, rows,
    accepted, rejected, ingested_at, status (``ingested`` / ``replaced`` / ``failed``), error.

Rules (documented here because this is the only place they live):

* **Idempotent.** A file whose (name, sha256) is already recorded as ``ingested`` or ``failed``
  is skipped: re-running over the same files adds nothing. To retry a failed file, fix it (its
  content, hence its sha256, changes).
* **Changed file** (same name, new content): in one transaction, the rows (accepted and
  rejected) of the file's previous version are deleted, the new content's rows are inserted, and
  the previous version's bookkeeping row becomes ``replaced``. If the new content is malformed
  the previous version's rows are **kept** (a broken upload never wipes good data) and the new
  version is recorded as ``failed``. Going back to an older content re-ingests it.
  A file that disappears from the folder keeps its rows (raw is an append-only record).
* **A copy** (same content as another, already ingested file) is recorded as ``failed``: its
  responses are already in.
* **Files are processed in name order**; ``source_row`` is the 1-based record number inside the
  file (CSV: data rows after the header; JSON: position in the array).
* **response_id** when the column is absent or the value empty: ``<file name>#<source_row>``,
  stable as long as the file keeps its name and row order.
* **Duplicate response_id**: the first stored wins; a later one (later file in name order, later
  row in the same file, or any row of a file ingested in a later run) is rejected as
  ``duplicate_response_id``. A replaced file's old rows do not count (they are deleted first).
* **submitted_at**: ISO 8601, with or without offset. With an offset it is converted to UTC;
  without one it is read in ``naive_timezone`` (default UTC, same meaning as the dbt var
  ``source_timezone``). Stored as a TIMESTAMP in UTC. Later than the ingestion moment →
  ``future_submitted_at``.
* **Scores**: nps 0-10 and satisfaction 1-5, integers (``"7"``, ``7`` and ``7.0`` are 7; ``7.5``
  is not). One of the two may be empty; both empty → ``missing_scores``.
* **need_tags**: CSV pipe-separated (``quality|price``); JSON a list of strings or such a string.
  Known tags (:data:`KNOWN_NEED_TAGS`) are kept in ``need_tags`` as a sorted, lower-case,
  de-duplicated pipe-separated string; unknown ones do not reject the response (its scores are
  still valid) but are kept the same way in ``unknown_need_tags`` so they can be reviewed and
  added to the list. No tags → NULL.
* **comment**: stripped; empty → NULL.
* Only one reject reason per record, the first that applies in the order of
  :data:`REJECT_REASONS`.
* **Nothing is lost**: for every ingested file, rows = accepted + rejected.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa

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
SURVEY_SUFFIXES: frozenset[str] = frozenset({".csv", ".json"})

NPS_RANGE = (0, 10)
SATISFACTION_RANGE = (1, 5)

_DDL = (
    "create schema if not exists raw",
    """
    create table if not exists raw.survey_responses (
        response_id varchar,
        customer_id varchar,
        submitted_at timestamp,
        nps integer,
        satisfaction integer,
        comment varchar,
        need_tags varchar,
        unknown_need_tags varchar,
        source_file varchar,
        source_row integer,
        file_sha256 varchar,
        ingested_at timestamp
    )
    """,
    """
    create table if not exists raw.survey_rejects (
        source_file varchar,
        source_row integer,
        file_sha256 varchar,
        raw_record varchar,
        reject_reason varchar,
        ingested_at timestamp
    )
    """,
    """
    create table if not exists raw.survey_files (
        source_file varchar,
        file_sha256 varchar,
        rows integer,
        accepted integer,
        rejected integer,
        ingested_at timestamp,
        status varchar,
        error varchar
    )
    """,
)

_RESPONSE_SCHEMA = pa.schema(
    [
        ("response_id", pa.string()),
        ("customer_id", pa.string()),
        ("submitted_at", pa.timestamp("us")),
        ("nps", pa.int32()),
        ("satisfaction", pa.int32()),
        ("comment", pa.string()),
        ("need_tags", pa.string()),
        ("unknown_need_tags", pa.string()),
        ("source_file", pa.string()),
        ("source_row", pa.int32()),
        ("file_sha256", pa.string()),
        ("ingested_at", pa.timestamp("us")),
    ]
)

_REJECT_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("source_row", pa.int32()),
        ("file_sha256", pa.string()),
        ("raw_record", pa.string()),
        ("reject_reason", pa.string()),
        ("ingested_at", pa.timestamp("us")),
    ]
)


_DUCKDB_TYPES = {
    pa.string(): "varchar",
    pa.int32(): "integer",
    pa.timestamp("us"): "timestamp",
}


@dataclass
class IngestReport:
    """What one call of :func:`ingest_surveys` did, for logs and Dagster metadata."""

    files_seen: int = 0
    ingested: list[str] = field(default_factory=list)  # new files
    replaced: list[str] = field(default_factory=list)  # changed files re-ingested
    unchanged: list[str] = field(default_factory=list)  # already ingested (or failed) as is
    failed: dict[str, str] = field(default_factory=dict)  # file name → error message
    ignored: list[str] = field(default_factory=list)  # not .csv / .json
    rows_accepted: int = 0
    rows_rejected: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def has_failures(self) -> bool:
        return bool(self.failed)


class SurveyFileError(Exception):
    """A whole file cannot be read; the message names the file, the problem and the fix."""


@dataclass
class _Parsed:
    """Outcome of validating one file's records (nothing written yet)."""

    rows: int
    accepted: list[dict[str, Any]]
    rejected: list[dict[str, Any]]


def create_survey_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the three raw survey tables when absent (dbt sources them even before any file).

    A table created earlier with fewer columns (an older version, or a placeholder made by
    another loader) gets the missing ones added, so inserts by column name always fit.
    """
    for statement in _DDL:
        con.execute(statement)
    for table, schema in (
        ("raw.survey_responses", _RESPONSE_SCHEMA),
        ("raw.survey_rejects", _REJECT_SCHEMA),
    ):
        for column in schema:
            con.execute(
                f"alter table {table} add column if not exists {column.name} "
                f"{_DUCKDB_TYPES[column.type]}"
            )


def ingest_surveys(
    con: duckdb.DuckDBPyConnection,
    surveys_dir: Path | str | None,
    *,
    now: datetime | None = None,
    naive_timezone: str = "UTC",
) -> IngestReport:
    """Ingest every new or changed ``*.csv`` / ``*.json`` file of ``surveys_dir``.

    ``now`` (aware, or naive meaning UTC) is the ingestion moment: it stamps ``ingested_at`` and
    is the limit for ``future_submitted_at``; it is a parameter so tests are deterministic.
    A missing or empty folder leaves empty tables and no error. Each file is handled in its own
    transaction, so a failure in one file never leaves half of it behind, and never stops the
    others (it is recorded in ``raw.survey_files`` with status ``failed``).
    """
    create_survey_tables(con)
    report = IngestReport()
    now_utc = _to_utc_naive(now or datetime.now(UTC), ZoneInfo("UTC"))
    tz = ZoneInfo(naive_timezone)
    if surveys_dir is None:
        return report
    folder = Path(surveys_dir)
    if not folder.is_dir():
        return report

    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if path.name.startswith("."):
            continue  # editor swap files, partial uploads (.foo.csv.tmp), .DS_Store
        if path.suffix.lower() not in SURVEY_SUFFIXES:
            report.ignored.append(path.name)
            continue
        report.files_seen += 1
        _ingest_one_file(con, path, now_utc, tz, report)
    return report


def _ingest_one_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    now_utc: datetime,
    tz: ZoneInfo,
    report: IngestReport,
) -> None:
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    name = path.name
    known = dict(
        con.execute(
            "select file_sha256, status from raw.survey_files where source_file = ?", [name]
        ).fetchall()
    )
    if known.get(sha) in ("ingested", "failed"):
        report.unchanged.append(name)
        return
    has_current = "ingested" in known.values()

    try:
        copy_of = con.execute(
            "select min(source_file) from raw.survey_files "
            "where file_sha256 = ? and source_file <> ? and status = 'ingested'",
            [sha, name],
        ).fetchone()[0]
        if copy_of is not None:
            # Generated response ids contain the file name, so a renamed copy would otherwise
            # count every response twice.
            raise SurveyFileError(
                f"Survey file {name!r} has exactly the same content as {copy_of!r}, which is "
                "already ingested; nothing was loaded from it. Delete the copy (if it is a "
                "different survey, check the export)."
            )
        parsed = _parse_file(name, data, now_utc, tz)
    except SurveyFileError as exc:
        error = str(exc)
        if has_current:
            error += " The rows of this file's previous version are kept."
        con.begin()
        try:
            con.execute(
                "delete from raw.survey_files where source_file = ? and file_sha256 = ?",
                [name, sha],
            )
            con.execute(
                "insert into raw.survey_files values (?, ?, 0, 0, 0, ?, 'failed', ?)",
                [name, sha, now_utc, error],
            )
            con.commit()
        except BaseException:
            con.rollback()
            raise
        report.failed[name] = error
        return

    con.begin()
    try:
        # The previous version's rows go first, so they neither count as duplicates nor stay.
        con.execute("delete from raw.survey_responses where source_file = ?", [name])
        con.execute("delete from raw.survey_rejects where source_file = ?", [name])
        accepted, rejected = _reject_stored_duplicates(con, parsed)
        for row in accepted:
            row.update(source_file=name, file_sha256=sha, ingested_at=now_utc)
        for row in rejected:
            row.update(source_file=name, file_sha256=sha, ingested_at=now_utc)
        _insert(con, "raw.survey_responses", accepted, _RESPONSE_SCHEMA)
        _insert(con, "raw.survey_rejects", rejected, _REJECT_SCHEMA)
        con.execute(
            "update raw.survey_files set status = 'replaced' "
            "where source_file = ? and status = 'ingested'",
            [name],
        )
        con.execute(
            "delete from raw.survey_files where source_file = ? and file_sha256 = ?", [name, sha]
        )
        con.execute(
            "insert into raw.survey_files values (?, ?, ?, ?, ?, ?, 'ingested', null)",
            [name, sha, parsed.rows, len(accepted), len(rejected), now_utc],
        )
        con.commit()
    except BaseException:
        con.rollback()
        raise

    (report.replaced if has_current else report.ingested).append(name)
    report.rows_accepted += len(accepted)
    report.rows_rejected += len(rejected)
    counts = Counter(report.reject_reasons)
    counts.update(row["reject_reason"] for row in rejected)
    report.reject_reasons = dict(sorted(counts.items()))


def _reject_stored_duplicates(
    con: duckdb.DuckDBPyConnection, parsed: _Parsed
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Move rows whose response_id is already stored (other files) to the rejects."""
    if not parsed.accepted:
        return parsed.accepted, parsed.rejected
    ids = pa.table({"response_id": [row["response_id"] for row in parsed.accepted]})
    con.register("_survey_candidate_ids", ids)
    try:
        taken = {
            rid
            for (rid,) in con.execute(
                "select distinct c.response_id from _survey_candidate_ids as c "
                "inner join raw.survey_responses as r on r.response_id = c.response_id"
            ).fetchall()
        }
    finally:
        con.unregister("_survey_candidate_ids")
    if not taken:
        return parsed.accepted, parsed.rejected
    accepted = [row for row in parsed.accepted if row["response_id"] not in taken]
    rejected = list(parsed.rejected)
    for row in parsed.accepted:
        if row["response_id"] in taken:
            rejected.append(_reject(row["source_row"], row["_raw"], "duplicate_response_id"))
    rejected.sort(key=lambda r: r["source_row"])
    return accepted, rejected


def _insert(
    con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]], schema: pa.Schema
) -> None:
    if not rows:
        return
    arrow = pa.Table.from_pylist(
        [{name: row.get(name) for name in schema.names} for row in rows], schema=schema
    )
    con.register("_survey_rows", arrow)
    try:
        con.execute(f"insert into {table} by name select * from _survey_rows")
    finally:
        con.unregister("_survey_rows")


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def _parse_file(name: str, data: bytes, now_utc: datetime, tz: ZoneInfo) -> _Parsed:
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
            rejected.append(_reject(source_row, raw_record, structural_reason))
            continue
        result = _validate(name, source_row, record, now_utc, tz)
        if isinstance(result, str):
            rejected.append(_reject(source_row, raw_record, result))
        elif result["response_id"] in seen_ids:
            rejected.append(_reject(source_row, raw_record, "duplicate_response_id"))
        else:
            seen_ids.add(result["response_id"])
            result["_raw"] = raw_record
            accepted.append(result)
    return _Parsed(rows=rows, accepted=accepted, rejected=rejected)


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


# --------------------------------------------------------------------------------------------
# Validating one record
# --------------------------------------------------------------------------------------------


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


def _reject(source_row: int, raw_record: str, reason: str) -> dict[str, Any]:
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
    return _to_utc_naive(parsed, tz)


def _to_utc_naive(value: datetime, naive_tz: ZoneInfo) -> datetime:
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
