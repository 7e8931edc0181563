"""Delivery bookkeeping: `raw.deliveries` and `raw.load_manifest`. Reads the files' size,
modification time and hash and the bookkeeping rows; writes the bookkeeping (the caller's
transaction).

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

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from customer_warehouse import warehouse
from customer_warehouse.ingestion.contract import (
    DELIVERIES_TABLE,
    LOADED,
    RAW_SCHEMA,
    SOURCES,
    LoadedSource,
    SourceSpec,
)
from customer_warehouse.ingestion.files import DeliveryFile, file_sha256

# A file modified this close to when it was last hashed is hashed again (see check_file).
RACY_SECONDS = 2.0
SQL_NOW = "cast(current_timestamp at time zone 'UTC' as timestamp)"
DELIVERIES_DDL = f"""
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


@dataclass
class Recorded:
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
class FileCheck:
    """What a load does with one file of the folder: `unchanged`, `new` or `changed`."""

    file: DeliveryFile
    action: str
    size_bytes: int
    mtime_ns: int
    sha256: str | None = None  # None: not read (size and modification time as recorded)
    verified_at: datetime | None = None  # when the hash was computed
    recorded: Recorded | None = None


def utc_naive(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC).replace(tzinfo=None)


def check_file(file: DeliveryFile, recorded: Recorded | None) -> FileCheck:
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
        return FileCheck(file, "unchanged", stat.st_size, stat.st_mtime_ns, recorded=recorded)
    verified_at = utc_naive(time.time())
    sha = file_sha256(file.path)
    if recorded is None:
        action = "new"
    elif recorded.sha256 == sha:
        action = "unchanged"
    else:
        action = "changed"
    return FileCheck(file, action, stat.st_size, stat.st_mtime_ns, sha, verified_at, recorded)


def recorded_files(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], Recorded]:
    if not warehouse.table_exists(con, DELIVERIES_TABLE):
        return {}
    rows = con.execute(
        f"select source, file, file_sha256, size_bytes, mtime_ns, path, verified_at, rows, "
        f"malformed_rows, encoding, delimiter, ignored_columns from {DELIVERIES_TABLE} "
        f"where status = '{LOADED}'"
    ).fetchall()
    return {
        (row[0], row[1]): Recorded(
            *row[1:11], ignored_columns=[c for c in (row[11] or "").split(",") if c]
        )
        for row in rows
    }


def change_status(
    con: duckdb.DuckDBPyConnection, status: str, source: str, file: str | None = None
) -> None:
    """The `loaded` row of one file of `source` (every file when `file` is None) becomes
    `status` (`replaced` or `removed`)."""
    where, params = (
        ("source = ?", [source]) if file is None else ("source = ? and file = ?", [source, file])
    )
    con.execute(
        f"update {DELIVERIES_TABLE} set status = '{status}', status_changed_at = {SQL_NOW} "
        f"where {where} and status = '{LOADED}'",
        params,
    )


def record_loaded(
    con: duckdb.DuckDBPyConnection,
    check: FileCheck,
    *,
    rows: int,
    malformed: int,
    encoding: str | None,
    delimiter: str | None,
    ignored: Sequence[str],
) -> None:
    """The bookkeeping row of a file whose rows are in its raw table now (status `loaded`)."""
    file = check.file
    con.execute(
        f"delete from {DELIVERIES_TABLE} where source = ? and file = ? and file_sha256 = ?",
        [file.source, file.name, check.sha256],
    )
    con.execute(
        f"insert into {DELIVERIES_TABLE} values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
        f"{SQL_NOW}, ?, '{LOADED}', null)",
        [
            file.source,
            file.name,
            file.delivery,
            check.sha256,
            check.size_bytes,
            utc_naive(check.mtime_ns / 1e9),
            check.mtime_ns,
            str(file.path),
            rows,
            malformed,
            encoding,
            delimiter,
            ",".join(ignored),
            check.verified_at,
        ],
    )


def record_unchanged(con: duckdb.DuckDBPyConnection, check: FileCheck) -> None:
    """A file read again with the same content (touched, copied, moved): remember where and
    when, so the next load need not read it."""
    con.execute(
        f"update {DELIVERIES_TABLE} set path = ?, size_bytes = ?, mtime_ns = ?, "
        f"modified_at = ?, verified_at = ? where source = ? and file = ? and status = '{LOADED}'",
        [
            str(check.file.path),
            check.size_bytes,
            check.mtime_ns,
            utc_naive(check.mtime_ns / 1e9),
            check.verified_at,
            check.file.source,
            check.file.name,
        ],
    )


def source_result(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    files: list[DeliveryFile],
    checks: list[FileCheck],
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


def write_manifest(con: duckdb.DuckDBPyConnection) -> None:
    """`raw.load_manifest`: every file in a raw table now (rows, ignored columns, encoding,
    delimiter, malformed rows, when it was loaded), and a row without a file for a source that
    has none."""
    absent = " union all ".join(f"select '{spec.name}' as source" for spec in SOURCES)
    con.execute(
        f"create or replace table {RAW_SCHEMA}.load_manifest as "
        "select source, file, rows, ignored_columns, encoding, delimiter, malformed_rows, "
        f"loaded_at from {DELIVERIES_TABLE} where status = '{LOADED}' "
        "union all select source, cast(null as varchar), 0, '', cast(null as varchar), "
        f"cast(null as varchar), 0, {SQL_NOW} from ({absent}) as sources "
        f"where source not in (select source from {DELIVERIES_TABLE} where status = '{LOADED}')"
    )


def status_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """{status: files} of raw.deliveries (for run metadata)."""
    return dict(
        con.execute(f"select status, count(*) from {DELIVERIES_TABLE} group by status").fetchall()
    )
