"""Loading into `raw.<source>`: what is new or changed in CW_RAW_DIR, in one transaction, with
erasure requests applied. Reads the raw files and `raw.deliveries`; writes the raw tables,
`raw.deliveries`, `raw.load_manifest` and `raw.erasure_requests`. Also the command line
(`python -m customer_warehouse.ingestion`).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from customer_warehouse import privacy, warehouse
from customer_warehouse.config import (
    ENCODING_AUTO,
    ConfigError,
    Settings,
    load_settings,
    parse_raw_encodings,
)
from customer_warehouse.ingestion import deliveries
from customer_warehouse.ingestion.contract import (
    RAW_SCHEMA,
    REMOVED,
    REPLACED,
    SOURCES,
    SOURCES_BY_NAME,
    LoadedSource,
    RawDataError,
    SourceSpec,
    expected_columns,
)
from customer_warehouse.ingestion.deliveries import DELIVERIES_DDL
from customer_warehouse.ingestion.files import (
    DeliveryFile,
    delivery_named,
    delivery_named_log,
    find_deliveries,
)
from customer_warehouse.ingestion.reading import (
    drop_scratch_tables,
    explain_read_error,
    stage_csv,
    stage_parquet,
)
from customer_warehouse.ingestion.structure import Planned, plan_file
from customer_warehouse.ingestion.surveys import create_survey_tables

CLI_DESCRIPTION = "Load the raw exports in CW_RAW_DIR into the `raw` schema, every column as text."


@dataclass
class _LoadPlan:
    """What a load will do, decided (every file checked) before anything is written."""

    layouts: dict[str, tuple[list[DeliveryFile], list[str]]]
    recorded: dict[tuple[str, str], deliveries.Recorded]
    new_tables: set[str]
    checks: dict[str, list[deliveries.FileCheck]] = field(default_factory=dict)
    gone: dict[str, list[str]] = field(default_factory=dict)
    planned: list[Planned] = field(default_factory=list)


class _Scratch:
    """New paths for transcoded copies; the folder is made on first use and goes with the
    load's ExitStack."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._folder: Path | None = None
        self._numbers = itertools.count(1)

    def __call__(self) -> Path:
        if self._folder is None:
            self._folder = Path(
                self._stack.enter_context(tempfile.TemporaryDirectory(prefix="cw-raw-"))
            )
        return self._folder / f"transcoded-{next(self._numbers)}.csv"


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
    plan = _plan_load(con, raw_dir, encodings, log)
    erased = _erased_ids(con, erasures)
    if privacy.register_erased_ids(con, erased):
        log(f"erasure requests: personal values of {len(erased)} customer(s) are not loaded")

    con.execute(f"create schema if not exists {RAW_SCHEMA}")
    with ExitStack() as stack, warehouse.transaction(con):
        results = _write_load(con, plan, _Scratch(stack), log)
        new = privacy.record_erasure_requests(con, erasures)
        if new:
            log(f"erasure requests: {new} new customer(s) recorded in raw.erasure_requests")
        scrub_erased(con)
        deliveries.write_manifest(con)
    log(f"raw load done in {time.perf_counter() - started:.1f}s")
    return results


def _plan_load(
    con: duckdb.DuckDBPyConnection,
    raw_dir: Path,
    encodings: Mapping[str, str],
    log: Callable[[str], None],
) -> _LoadPlan:
    """Find every source's files, compare them with the bookkeeping and check the structure of
    each file to read (nothing is written)."""
    plan = _LoadPlan(
        layouts={spec.name: find_deliveries(raw_dir, spec) for spec in SOURCES},
        recorded=deliveries.recorded_files(con),
        new_tables={spec.name for spec in SOURCES if needs_new_table(con, spec)},
    )
    for spec in SOURCES:
        files, ignored = plan.layouts[spec.name]
        for name in ignored:
            log(f"{name}: not a .csv or .parquet delivery; ignored")
        known = {} if spec.name in plan.new_tables else {
            file: record for (source, file), record in plan.recorded.items() if source == spec.name
        }  # fmt: skip
        plan.checks[spec.name] = [
            deliveries.check_file(file, known.get(file.name)) for file in files
        ]
        present = {file.name for file in files}
        plan.gone[spec.name] = sorted(set(known) - present)
    plan.planned = [
        plan_file(con, check, SOURCES_BY_NAME[source], encodings.get(source, ENCODING_AUTO))
        for source, source_checks in plan.checks.items()
        for check in source_checks
        if check.action != "unchanged"
    ]
    return plan


def _write_load(
    con: duckdb.DuckDBPyConnection,
    plan: _LoadPlan,
    scratch: Callable[[], Path],
    log: Callable[[str], None],
) -> list[LoadedSource]:
    """Carry the plan out source by source (inside the caller's transaction)."""
    con.execute(DELIVERIES_DDL)
    results: list[LoadedSource] = []
    for spec in SOURCES:
        source_started = time.perf_counter()
        if spec.name in plan.new_tables:
            _create_raw_table(con, spec, plan.recorded, log)
        for file in plan.gone[spec.name]:
            _remove_file(con, spec, file)
        for item in plan.planned:
            if item.spec is spec:
                _load_one(con, item, scratch=scratch, log=log)
        for check in plan.checks[spec.name]:
            if check.action == "unchanged" and check.sha256 is not None:
                deliveries.record_unchanged(con, check)
        files = plan.layouts[spec.name][0]
        results.append(
            deliveries.source_result(con, spec, files, plan.checks[spec.name], plan.gone)
        )
        _log_source(results[-1], time.perf_counter() - source_started, log)
    return results


def _erased_ids(
    con: duckdb.DuckDBPyConnection, requests: Sequence[privacy.ErasureRequest]
) -> list[privacy.ErasureRequest]:
    """The requests of the file and every request recorded before: a request stays in force
    after its file is gone, so a later delivery cannot bring the values back."""
    known = {request.customer_id for request in requests}
    earlier: list[privacy.ErasureRequest] = []
    # raw.erasure_requests is only ever a table (privacy.record_erasure_requests makes it).
    if warehouse.table_exists(con, privacy.ERASURE_TABLE):
        earlier = [
            privacy.ErasureRequest(customer_id, requested_at)
            for customer_id, requested_at in con.execute(
                f"select customer_id, requested_at from {privacy.ERASURE_TABLE}"
            ).fetchall()
            if customer_id not in known
        ]
    return [*requests, *earlier]


def needs_new_table(con: duckdb.DuckDBPyConnection, spec: SourceSpec) -> bool:
    """The raw table is missing, or was made by an older loader (other columns)."""
    columns = con.execute(
        "select column_name, data_type from duckdb_columns() where database_name = "
        "current_database() and schema_name = ? and table_name = ? order by column_index",
        [RAW_SCHEMA, spec.name],
    ).fetchall()
    return [tuple(c) for c in columns] != expected_columns(spec)


def _create_raw_table(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    recorded: Mapping[tuple[str, str], deliveries.Recorded],
    log: Callable[[str], None],
) -> None:
    """A new, empty raw table; files recorded for the old one are loaded again."""
    forgotten = [file for source, file in recorded if source == spec.name]
    if warehouse.table_exists(con, f"{RAW_SCHEMA}.{spec.name}"):
        log(f"raw.{spec.name}: made by an older loader (other columns); every file is read again")
    columns = ", ".join(f"{name} {dtype}" for name, dtype in expected_columns(spec))
    con.execute(f"create or replace table {RAW_SCHEMA}.{spec.name} ({columns})")
    if forgotten:
        deliveries.change_status(con, REMOVED, spec.name)


def _remove_file(con: duckdb.DuckDBPyConnection, spec: SourceSpec, file: str) -> None:
    """A file that is no longer in the folder: its rows leave the raw table."""
    con.execute(f"delete from {RAW_SCHEMA}.{spec.name} where _source_file = ?", [file])
    deliveries.change_status(con, REMOVED, spec.name, file)


def _load_one(
    con: duckdb.DuckDBPyConnection,
    item: Planned,
    *,
    scratch: Callable[[], Path],
    log: Callable[[str], None],
) -> None:
    """Replace the rows of one file (new or changed) in its raw table and record it."""
    check = item.check
    assert check is not None and check.sha256 is not None and check.verified_at is not None
    spec, file = item.spec, check.file
    table = f"{RAW_SCHEMA}.{spec.name}"
    malformed = 0
    with delivery_named(file):
        if item.csv is not None:
            malformed = stage_csv(con, item, delivery_named_log(file, log), scratch)
        else:
            stage_parquet(con, item)
        con.execute(f"delete from {table} where _source_file = ?", [file.name])
        try:
            con.execute(
                f"insert into {table} select {', '.join(scrubbed_columns(spec))}, "
                "? as _source_file, cast(_source_row as bigint) as _source_row, _load_error, "
                "_raw_line, ? as _delivery, ? as _file_sha256 from _loading order by _source_row",
                [file.name, file.delivery, check.sha256],
            )
        except duckdb.Error as exc:
            raise RawDataError(explain_read_error(file.path, exc)) from None
    if malformed:  # a malformed line has no parsed customer_id: blank it if it names one
        con.execute(
            f"update {table} set _raw_line = null where _source_file = ? "
            f"and _load_error is not null and {privacy.mentions_erased_id('_raw_line')}",
            [file.name],
        )
    drop_scratch_tables(con)
    rows = warehouse.scalar(
        con, f"select count(*) from {table} where _source_file = ?", [file.name]
    )
    deliveries.change_status(con, REPLACED, spec.name, file.name)
    deliveries.record_loaded(
        con,
        check,
        rows=rows,
        malformed=malformed,
        encoding=item.csv.encoding_label if item.csv else None,
        delimiter=item.csv.delimiter if item.csv else None,
        ignored=item.ignored,
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


def scrubbed_columns(spec: SourceSpec) -> list[str]:
    """The contract's columns; personal ones (seeds/personal_columns.csv) null for a customer
    with an erasure request, so the value never reaches a table (docs/privacy.md)."""
    if "customer_id" not in spec.columns:
        return list(spec.columns)
    return [
        f"{privacy.scrubbed(column)} as {column}" if privacy.is_personal(column) else column
        for column in spec.columns
    ]


def scrub_erased(con: duckdb.DuckDBPyConnection) -> None:
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


def ensure_survey_tables(con: duckdb.DuckDBPyConnection) -> None:
    """dbt stages raw.survey_responses; make sure it exists before the first survey ingest.

    The survey tables are append-only history owned by ``ingestion.surveys``: the raw load
    never touches them.
    """
    create_survey_tables(con)


def run(settings: Settings, *, log=print) -> list[LoadedSource]:
    with warehouse.connect(settings.warehouse_path, config=settings.duckdb_config) as con:
        results = load_raw(con, settings.raw_dir, log=log, encodings=settings.raw_encodings)
        ensure_survey_tables(con)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=CLI_DESCRIPTION)
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
