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

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa

from customer_warehouse import warehouse
from customer_warehouse.ingestion.survey_records import (
    Parsed,
    SurveyFileError,
    parse_file,
    rejected_row,
    to_utc_naive,
)

SURVEY_SUFFIXES: frozenset[str] = frozenset({".csv", ".json"})

# Arrow types of the survey tables' columns, by DuckDB type name.
_ARROW_TYPES = {name: arrow for arrow, name in warehouse.DUCKDB_TYPES.items()}


def _schema(columns: str) -> pa.Schema:
    """``"name type, ..."`` (DuckDB type names) as an Arrow schema."""
    pairs = (column.split() for column in columns.split(","))
    return pa.schema([(name, _ARROW_TYPES[dtype]) for name, dtype in pairs])


_RESPONSE_SCHEMA = _schema(
    "response_id varchar, customer_id varchar, submitted_at timestamp, nps integer, "
    "satisfaction integer, comment varchar, need_tags varchar, unknown_need_tags varchar, "
    "source_file varchar, source_row integer, file_sha256 varchar, ingested_at timestamp"
)
_REJECT_SCHEMA = _schema(
    "source_file varchar, source_row integer, file_sha256 varchar, raw_record varchar, "
    "reject_reason varchar, ingested_at timestamp"
)
_FILES_SCHEMA = _schema(
    "source_file varchar, file_sha256 varchar, rows integer, accepted integer, "
    "rejected integer, ingested_at timestamp, status varchar, error varchar"
)
_TABLES = {
    "raw.survey_responses": _RESPONSE_SCHEMA,
    "raw.survey_rejects": _REJECT_SCHEMA,
    "raw.survey_files": _FILES_SCHEMA,
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

    def count_rows(self, accepted: int, rejected: list[dict[str, Any]]) -> None:
        self.rows_accepted += accepted
        self.rows_rejected += len(rejected)
        counts = Counter(self.reject_reasons)
        counts.update(row["reject_reason"] for row in rejected)
        self.reject_reasons = dict(sorted(counts.items()))


def create_survey_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the three raw survey tables when absent (dbt sources them even before any file).

    A table created earlier with fewer columns (an older version, or a placeholder made by
    another loader) gets the missing ones added, so inserts by column name always fit.
    """
    con.execute("create schema if not exists raw")
    for table, schema in _TABLES.items():
        columns = ", ".join(f"{c.name} {warehouse.DUCKDB_TYPES[c.type]}" for c in schema)
        con.execute(f"create table if not exists {table} ({columns})")
    for table in ("raw.survey_responses", "raw.survey_rejects"):
        for column in _TABLES[table]:
            con.execute(
                f"alter table {table} add column if not exists {column.name} "
                f"{warehouse.DUCKDB_TYPES[column.type]}"
            )


def list_survey_files(folder: Path) -> tuple[list[Path], list[str]]:
    """The files :func:`ingest_surveys` reads (*.csv / *.json, no hidden files, by name) and the
    names of the other files, which it ignores; nothing for a folder that does not exist."""
    files: list[Path] = []
    ignored: list[str] = []
    if not folder.is_dir():
        return files, ignored
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if path.name.startswith("."):
            continue  # editor swap files, partial uploads (.foo.csv.tmp), .DS_Store
        if path.suffix.lower() not in SURVEY_SUFFIXES:
            ignored.append(path.name)
        else:
            files.append(path)
    return files, ignored


def survey_files_in(folder: Path) -> list[Path]:
    """The files :func:`ingest_surveys` reads in ``folder``, in the order it reads them."""
    return list_survey_files(folder)[0]


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
    now_utc = to_utc_naive(now or datetime.now(UTC), ZoneInfo("UTC"))
    tz = ZoneInfo(naive_timezone)
    if surveys_dir is None:
        return report
    files, report.ignored = list_survey_files(Path(surveys_dir))
    for path in files:
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
        _refuse_copy(con, name, sha)
        parsed = parse_file(name, data, now_utc, tz)
    except SurveyFileError as exc:
        error = str(exc)
        if has_current:
            error += " The rows of this file's previous version are kept."
        with warehouse.transaction(con):
            _record_file(con, name, sha, now_utc, error=error)
        report.failed[name] = error
        return

    with warehouse.transaction(con):
        accepted, rejected = _replace_rows(con, name, sha, now_utc, parsed)
        con.execute(
            "update raw.survey_files set status = 'replaced' "
            "where source_file = ? and status = 'ingested'",
            [name],
        )
        _record_file(
            con,
            name,
            sha,
            now_utc,
            rows=parsed.rows,
            accepted=len(accepted),
            rejected=len(rejected),
        )
    (report.replaced if has_current else report.ingested).append(name)
    report.count_rows(len(accepted), rejected)


def _refuse_copy(con: duckdb.DuckDBPyConnection, name: str, sha: str) -> None:
    copy_of = warehouse.scalar(
        con,
        "select min(source_file) from raw.survey_files "
        "where file_sha256 = ? and source_file <> ? and status = 'ingested'",
        [sha, name],
    )
    if copy_of is not None:
        # Generated response ids contain the file name, so a renamed copy would otherwise
        # count every response twice.
        raise SurveyFileError(
            f"Survey file {name!r} has exactly the same content as {copy_of!r}, which is "
            "already ingested; nothing was loaded from it. Delete the copy (if it is a "
            "different survey, check the export)."
        )


def _replace_rows(
    con: duckdb.DuckDBPyConnection, name: str, sha: str, now_utc: datetime, parsed: Parsed
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The file's rows (accepted and rejected) in place of its previous version's."""
    # The previous version's rows go first, so they neither count as duplicates nor stay.
    con.execute("delete from raw.survey_responses where source_file = ?", [name])
    con.execute("delete from raw.survey_rejects where source_file = ?", [name])
    accepted, rejected = _reject_stored_duplicates(con, parsed)
    for row in [*accepted, *rejected]:
        row.update(source_file=name, file_sha256=sha, ingested_at=now_utc)
    _insert(con, "raw.survey_responses", accepted, _RESPONSE_SCHEMA)
    _insert(con, "raw.survey_rejects", rejected, _REJECT_SCHEMA)
    return accepted, rejected


def _record_file(
    con: duckdb.DuckDBPyConnection,
    name: str,
    sha: str,
    now_utc: datetime,
    *,
    rows: int = 0,
    accepted: int = 0,
    rejected: int = 0,
    error: str | None = None,
) -> None:
    """The bookkeeping row of one content of a file: `failed` with its error, or `ingested`."""
    con.execute(
        "delete from raw.survey_files where source_file = ? and file_sha256 = ?", [name, sha]
    )
    status = "ingested" if error is None else "failed"
    con.execute(
        "insert into raw.survey_files values (?, ?, ?, ?, ?, ?, ?, ?)",
        [name, sha, rows, accepted, rejected, now_utc, status, error],
    )


def failing_files(con: duckdb.DuckDBPyConnection, folder: Path) -> dict[str, str]:
    """Files in the folder whose current content is recorded as failed (name → error)."""
    current = [
        (path.name, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in survey_files_in(folder)
    ]
    if not current:
        return {}
    rows = con.execute(
        "select source_file, file_sha256, error from raw.survey_files where status = 'failed'"
    ).fetchall()
    failed = {(name, sha): error for name, sha, error in rows}
    return {name: failed[(name, sha)] for name, sha in current if (name, sha) in failed}


def _reject_stored_duplicates(
    con: duckdb.DuckDBPyConnection, parsed: Parsed
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
            rejected.append(rejected_row(row["source_row"], row["_raw"], "duplicate_response_id"))
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
