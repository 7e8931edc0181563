"""Reading one checked file into the temporary view `_loading` (contract columns as text,
`_source_row`, `_load_error`, `_raw_line`): DuckDB's CSV reader with malformed rows kept and
numbered, or a Parquet file turned into text. Reads the raw file; writes temporary tables only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb

from customer_warehouse import warehouse
from customer_warehouse.config import encoding_variable
from customer_warehouse.ingestion.contract import (
    BAD_QUOTING,
    MAX_RECORD_BYTES,
    TOO_FEW_FIELDS,
    TOO_MANY_FIELDS,
    RawDataError,
    SourceSpec,
)
from customer_warehouse.ingestion.encoding import (
    CsvPlan,
    blank_lines_before,
    has_mixed_line_ends,
    iconv_hint,
    line_at,
    normalize_line_ends,
    transcode,
)
from customer_warehouse.ingestion.files import sql_path
from customer_warehouse.ingestion.structure import TIMESTAMP_TYPES, Planned, delimiter_text

_REJECTS = "_cw_rejects"
_REJECT_SCANS = "_cw_reject_scans"


def _read_csv_sql(path: Path, delimiter: str, n_columns: int) -> str:
    columns = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(n_columns))
    return (
        f"read_csv('{sql_path(path)}', header = true, auto_detect = false, "
        f"columns = {{{columns}}}, delim = '{delimiter}', quote = '\"', escape = '\"', "
        "strict_mode = true, encoding = 'utf-8', "
        f"max_line_size = {MAX_RECORD_BYTES}, ignore_errors = true, store_rejects = true, "
        f"rejects_table = '{_REJECTS}', rejects_scan = '{_REJECT_SCANS}', "
        "rejects_line_size_limit = 0)"
    )


def _duckdb_reads(path: Path, plan: CsvPlan) -> bool:
    """Whether DuckDB's reader gets through the file (a probe on a private connection, so a
    failure cannot abort the load's transaction)."""
    with warehouse.connect(":memory:") as probe:
        try:
            probe.execute(
                f"select count(*) from {_read_csv_sql(path, plan.delimiter, len(plan.columns))}"
            )
        except duckdb.Error:
            return False
    return True


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
    plan: CsvPlan,
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
        raise RawDataError(explain_read_error(original, exc)) from None

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
        line = line_at(readable, start)
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
    plan: CsvPlan,
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
            f"it), or convert the file to UTF-8: {iconv_hint(path)}. Nothing was loaded."
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
    blanks = blank_lines_before(readable, starts)
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


def stage_csv(
    con: duckdb.DuckDBPyConnection,
    item: Planned,
    log: Callable[[str], None],
    scratch: Callable[[], Path],
) -> int:
    """Build `_loading` for a CSV file; return the number of malformed rows. `scratch` gives
    a path for a transcoded or normalized copy."""
    assert item.path is not None and item.csv is not None
    path, plan, spec = item.path, item.csv, item.spec
    variable = encoding_variable(spec.name)
    readable = path
    if plan.encoding != "utf-8":
        readable = scratch()
        transcode(path, plan, readable, variable)
    if has_mixed_line_ends(readable) and not _duckdb_reads(readable, plan):
        # Records ending in CRLF and in bare LF/CR both (rows appended by another program):
        # DuckDB's reader stops on them. Read a copy with every line end as LF (line breaks
        # inside quoted values become LF too).
        normalized = scratch()
        normalize_line_ends(readable, normalized)
        readable = normalized
        log(f"{path.name}: mixes CRLF and LF line ends; read with every line end as LF")
    n_bad = _read_csv(con, path, readable, plan, spec)
    log(
        f"{path.name}: read as {plan.encoding_label} ({plan.encoding_how}), delimiter "
        f"{delimiter_text(plan.delimiter, ', from the header')}"
    )
    _number_csv_rows(con, path, readable, n_bad)
    n_good = con.execute("select count(*) from _cw_good").fetchone()[0]
    if n_bad:
        first_start, first_error = con.execute(
            "select start, load_error from _cw_bad order by line limit 1"
        ).fetchone()
        first_physical = line_at(readable, first_start)
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


def drop_scratch_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("drop view if exists _loading")
    con.execute("drop view if exists _cw_numbered")
    for table in ("_cw_good", "_cw_bad", "_cw_bad_rows"):
        con.execute(f"drop table if exists {table}")


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
    if dtype in TIMESTAMP_TYPES:
        return timestamp_text(f"cast({quoted} as timestamp)")
    return f"cast({quoted} as varchar)"


def stage_parquet(con: duckdb.DuckDBPyConnection, item: Planned) -> None:
    assert item.path is not None
    select_list = []
    for column in item.spec.columns:
        if column in item.parquet_types:
            select_list.append(f"{_parquet_text(column, item.parquet_types[column])} as {column}")
        else:
            select_list.append(f"cast(null as varchar) as {column}")
    columns = ", ".join(select_list)
    empty_load_columns = "cast(null as varchar) as _load_error, cast(null as varchar) as _raw_line"
    path = sql_path(item.path)
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
        raise RawDataError(explain_read_error(item.path, exc)) from None


def explain_read_error(path: Path | None, exc: duckdb.Error) -> str:
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
