"""Replay past as-of dates into the tier history (``marts.customer_tier_history``).

The tier history holds one row per customer and as-of date. A daily run adds its own as-of
date from ``marts.customer_tiers``; past dates are added by replaying them, which is what a
backfill of the history's Dagster partitions does (``orchestration/defs/dbt/history.py``,
``make backfill``). Every tier, stage and level is computed from the order history as of a
date, so a replayed date gets exactly the rows a daily run on that date would have written.

How one replay works (one call of :func:`replay`, inside one Dagster run):

1. dbt parses the project once with ``scratch_schema_prefix`` set: every model then lives in
   a scratch schema (``tier_replay_staging``, ``tier_replay_marts``, ...), except the history
   table itself (``macros/naming/generate_schema_name.sql``). The warehouse's own staging,
   intermediate and marts tables are never rewritten for a past date, and a replay needs
   nothing but the raw tables (it works on a warehouse that has never been built).
2. Seeds and the models that do not depend on the as-of date (staging) are built once.
3. Per as-of date: the models between ``int_as_of_date`` and the history are built with
   ``--vars '{as_of_date: ...}'``; the history model replaces that date's rows (delete+insert
   by as_of_date), nothing else.
4. The history model's own dbt tests run on the whole history table (their results are
   returned, for the caller to report; the Dagster step turns them into asset checks).
5. The scratch schemas are dropped (also after a failure; a killed replay leaves them, and the
   next replay drops them first).

The parsed manifest is reused for every date, so a date costs one ``dbt run`` of about fifteen
models (a few seconds at demo scale), not a dbt start-up. Which dates a range gives:
:func:`as_of_dates` (every day, month ends, or ``auto``: every day for a range of up to
:data:`DAILY_MAX_DAYS` days, else month ends).
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb

from customer_warehouse import warehouse

HISTORY_TABLE = "marts.customer_tier_history"
HISTORY_MODEL = "customer_tier_history"
#: Scratch schemas of a replay are this prefix + the real schema name.
SCRATCH_PREFIX = "tier_replay_"
#: Built once per replay: what the history needs that does not depend on the as-of date.
STATIC_SELECTION = f"+{HISTORY_MODEL}"
STATIC_EXCLUSION = "int_as_of_date+"
#: Built per as-of date: from the as-of date to the history (intersection of two selectors).
DATED_SELECTION = f"int_as_of_date+,+{HISTORY_MODEL}"
#: The history model's tests, whose every parent is the history (the SCD2 test is not).
TEST_SELECTION = ["--select", HISTORY_MODEL, "--indirect-selection", "cautious"]
#: Raw tables a replay reads (the staging models' sources); without them nothing can be built.
REQUIRED_RAW_TABLE = "raw.orders"

EVERY_CHOICES = ("auto", "day", "month")
#: ``every='auto'``: a range of up to this many days is replayed day by day; a longer one at
#: month ends (and its last day). 92 days: a quarter of daily history costs about as many dbt
#: runs as eight years of month ends.
DAILY_MAX_DAYS = 92

Log = Callable[[str], None]


class ReplayError(RuntimeError):
    """A replay cannot start or a dbt step failed; the message says what to do."""


def as_of_dates(start: date, end: date, every: str = "auto") -> list[date]:
    """The as-of dates a backfill of ``start``..``end`` (both included) computes, increasing.

    ``day``: every day. ``month``: the last day of every month in the range, and ``end``
    itself (so the history reaches the end of the range). ``auto``: ``day`` for a range of at
    most :data:`DAILY_MAX_DAYS` days, else ``month``.
    """
    if every not in EVERY_CHOICES:
        raise ReplayError(
            f"every={every!r} is not one of {', '.join(EVERY_CHOICES)}: use day (every day), "
            f"month (month ends) or auto (every day up to {DAILY_MAX_DAYS} days, else month ends)."
        )
    if start > end:
        raise ReplayError(f"The range starts on {start}, after its end {end}.")
    days = (end - start).days + 1
    if every == "day" or (every == "auto" and days <= DAILY_MAX_DAYS):
        return [start + timedelta(days=offset) for offset in range(days)]
    dates: list[date] = []
    year, month = start.year, start.month
    while (year, month) <= (end.year, end.month):
        month_end = date(year, month, calendar.monthrange(year, month)[1])
        if start <= month_end <= end:
            dates.append(month_end)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    if not dates or dates[-1] != end:
        dates.append(end)
    return dates


@dataclass
class DateResult:
    """What replaying one as-of date wrote."""

    as_of_date: date
    rows: int
    seconds: float


@dataclass
class TestResult:
    """One dbt test of the history model, run after the replay."""

    name: str
    status: str  # dbt's: pass, warn (failed, severity warn), fail or error
    failures: int | None
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass
class ReplayReport:
    """Summary of one replay."""

    dates: list[DateResult] = field(default_factory=list)
    tests: list[TestResult] = field(default_factory=list)
    history_rows: int = 0
    history_dates: int = 0
    seconds: float = 0.0


class ScratchDbt:
    """dbt in this process, parsed once with the scratch schemas, reused for every command.

    ``work_dir`` holds dbt's artifacts and logs of the replay; it is kept between replays so
    dbt's partial parsing saves most of the parse next time.
    """

    def __init__(self, project_dir: Path, profiles_dir: Path, work_dir: Path):
        self.project_dir = project_dir
        self.profiles_dir = profiles_dir
        self.work_dir = work_dir
        self._manifest: Any = None

    def _args(self) -> list[str]:
        return [
            "--quiet",
            "--project-dir",
            str(self.project_dir),
            "--profiles-dir",
            str(self.profiles_dir),
            "--target-path",
            str(self.work_dir),
            "--log-path",
            str(self.work_dir),
            "--log-level-file",
            "warn",
        ]

    @staticmethod
    def _vars(as_of: date | None) -> list[str]:
        values = {"scratch_schema_prefix": SCRATCH_PREFIX}
        if as_of is not None:
            values["as_of_date"] = as_of.isoformat()
        return ["--vars", json.dumps(values)]

    def invoke(
        self, command: Sequence[str], *, as_of: date | None = None, check: bool = True
    ) -> Any:
        """``dbt <command>`` on the scratch schemas; its result. ReplayError with dbt's messages
        when it fails (with ``check=False`` only when dbt itself failed, not a test)."""
        from dbt.cli.main import dbtRunner  # imported late: dbt is slow to import

        if self._manifest is None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            parsed = dbtRunner().invoke(["parse", *self._args(), *self._vars(None)])
            if not parsed.success:
                raise ReplayError(
                    f"dbt could not parse the project: {parsed.exception or 'see dbt.log'} "
                    f"(logs in {self.work_dir}). Fix the project (`dbt parse` shows the error)."
                )
            self._manifest = parsed.result
        args = [command[0], *self._args(), *command[1:], *self._vars(as_of)]
        try:
            result = dbtRunner(manifest=self._manifest).invoke(args)
        finally:
            release_warehouse_file()
        if (check and not result.success) or result.result is None:
            raise ReplayError(
                f"dbt {' '.join(command)}"
                + (f" as of {as_of}" if as_of else "")
                + f" failed: {failure_summary(result)} (logs in {self.work_dir})"
            )
        return result


def release_warehouse_file() -> None:
    """Close the DuckDB database dbt-duckdb keeps open in this process after a command.

    dbt-duckdb caches one database instance per process (``DuckDBConnectionManager._ENV``) and
    does not always close it when a command ends. In a Dagster step that would hold the file's
    lock against the next step's dbt subprocess, and refuse this process's own connections
    ("a different configuration than existing connections"). No other public way to close it.
    """
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # another adapter (Spark): nothing cached here
        return
    with DuckDBConnectionManager._LOCK:
        environment = DuckDBConnectionManager._ENV
        DuckDBConnectionManager._ENV = None
        if environment is not None:
            environment.close()


def failure_summary(result: Any) -> str:
    """The messages of the failed dbt nodes, or the exception, in one line."""
    if result.exception is not None:
        return str(result.exception)
    messages = []
    for node_result in getattr(result.result, "results", None) or []:
        if str(getattr(node_result, "status", "")).lower() in ("error", "fail"):
            name = getattr(getattr(node_result, "node", None), "name", "?")
            messages.append(f"{name}: {node_result.message}")
    return "; ".join(messages) or "see dbt.log"


def scratch_schemas(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The scratch schemas a replay left behind (normally none)."""
    rows = con.execute(
        "select distinct schema_name from information_schema.schemata "
        "where starts_with(schema_name, ?) order by 1",
        [SCRATCH_PREFIX],
    ).fetchall()
    return [row[0] for row in rows]


def drop_scratch_schemas(warehouse_path: Path) -> list[str]:
    """Drop every scratch schema of a replay; return their names."""
    if not warehouse_path.exists():
        return []
    with warehouse.connect(warehouse_path) as con:
        dropped = scratch_schemas(con)
        for schema in dropped:
            # The name comes from the catalog and starts with SCRATCH_PREFIX; quoted anyway.
            con.execute(f'drop schema if exists "{schema}" cascade')
    return dropped


def _check_raw_loaded(warehouse_path: Path) -> None:
    if warehouse_path.exists():
        with warehouse.connect(warehouse_path) as con:
            if warehouse.table_exists(con, REQUIRED_RAW_TABLE):
                return
    raise ReplayError(
        f"{warehouse_path} has no {REQUIRED_RAW_TABLE}: load the raw files first. Run the "
        "backfill with the raw assets (`make backfill` does), or `make run` once."
    )


def history_counts(warehouse_path: Path) -> tuple[dict[date, int], int]:
    """({as-of date: rows} of the history, its total rows); empty without a history table.

    A plain (read-write) connection, the configuration dbt-duckdb uses in this process: DuckDB
    refuses a second configuration of an open file within one process.
    """
    with warehouse.connect(warehouse_path) as con:
        if not warehouse.table_exists(con, HISTORY_TABLE):
            return {}, 0
        rows = con.execute(
            f"select as_of_date, count(*) from {HISTORY_TABLE} group by 1"
        ).fetchall()
    per_date = {row[0]: row[1] for row in rows}
    return per_date, sum(per_date.values())


def replay(
    dates: Sequence[date],
    *,
    warehouse_path: Path,
    project_dir: Path,
    profiles_dir: Path,
    work_dir: Path,
    log: Log = print,
) -> ReplayReport:
    """Write the history rows of every date in ``dates`` (any order; see the module docstring).

    Each date's rows replace that date's rows and nothing else, so replaying a date again, or
    dates in another order, leaves the same history.
    """
    started = time.monotonic()
    dates = sorted(set(dates))
    if not dates:
        raise ReplayError("No as-of dates to replay.")
    _check_raw_loaded(warehouse_path)
    leftovers = drop_scratch_schemas(warehouse_path)
    if leftovers:
        log(f"dropped scratch schemas of an interrupted replay: {', '.join(leftovers)}")
    dbt = ScratchDbt(project_dir, profiles_dir, work_dir)
    report = ReplayReport()
    try:
        step_started = time.monotonic()
        dbt.invoke(["seed"])
        dbt.invoke(["run", "--select", STATIC_SELECTION, "--exclude", STATIC_EXCLUSION])
        log(
            f"replay of {len(dates)} as-of date(s) from {dates[0]} to {dates[-1]}: seeds and "
            f"staging built in scratch schemas [{time.monotonic() - step_started:.1f}s]"
        )
        width = len(str(len(dates)))
        for number, as_of in enumerate(dates, start=1):
            step_started = time.monotonic()
            dbt.invoke(["run", "--select", DATED_SELECTION], as_of=as_of)
            rows = history_counts(warehouse_path)[0].get(as_of, 0)
            seconds = time.monotonic() - step_started
            report.dates.append(DateResult(as_of, rows, seconds))
            elapsed = time.monotonic() - started
            remaining = elapsed / number * (len(dates) - number)
            log(
                f"  [{number:>{width}}/{len(dates)}] as of {as_of}: {rows:,} customers "
                f"[{seconds:.1f}s, about {remaining:.0f}s left]"
            )
        tested = dbt.invoke(["test", *TEST_SELECTION], check=False)
        report.tests = [
            TestResult(
                name=node_result.node.name,
                status=str(node_result.status).lower().rsplit(".", 1)[-1],
                failures=node_result.failures,
                message=node_result.message or "",
            )
            for node_result in tested.result.results
        ]
    finally:
        try:
            drop_scratch_schemas(warehouse_path)
        except duckdb.Error as exc:  # e.g. the file is locked: keep the first error
            log(f"scratch schemas not dropped ({exc}); the next replay drops them")
    per_date, total = history_counts(warehouse_path)
    report.history_dates, report.history_rows = len(per_date), total
    report.seconds = time.monotonic() - started
    failed = [test.name for test in report.tests if not test.passed]
    log(
        f"done: {len(dates)} as-of date(s) written; the history holds {total:,} rows over "
        f"{len(per_date):,} as-of dates; {len(report.tests) - len(failed)} of "
        f"{len(report.tests)} tests passed{': failed ' + ', '.join(failed) if failed else ''} "
        f"[{report.seconds:.1f}s]"
    )
    return report
