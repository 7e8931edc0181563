"""Rebuild the tier history (snapshots.customer_tiers_snapshot) for a range of past as-of dates.

Every tier, stage and level is computed from the order history as of a date, so the history a
new installation lacks can be replayed: for each as-of date, in increasing order, dbt rebuilds
the models that feed ``marts.customer_tiers`` with ``--vars '{as_of_date: ...}'`` and takes a
``dbt snapshot``. The snapshot is SCD2 with the as-of date as its clock, so the versions it
records are the ones a daily run on each of those dates would have recorded, and
``marts.customer_tier_transitions`` then lists every movement of the replayed period.

History must grow in as-of order: a snapshot of an earlier date taken after a later one would
close the later versions in the past. The command therefore refuses dates on or before the end
of the existing history unless ``--reset`` drops the history first (the full rebuild, e.g. after
a rule change). After the last date it rebuilds the marts for the current as-of date again
(``CW_AS_OF_DATE`` or the last order date), so the warehouse is left as a daily run leaves it.

Usage (the warehouse must be loaded: ``make run``, or ``python -m customer_warehouse.raw_load``)::

    python -m customer_warehouse.backfill --start 2024-01-31 --end 2025-12-31 --every month
    python -m customer_warehouse.backfill --start 2024-01-01 --every week --reset

dbt runs in-process through ``dbtRunner``; the project is parsed once and the parsed manifest
is reused for every date, so a date costs seconds, not a full dbt start-up.
"""

from __future__ import annotations

import argparse
import calendar
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb

from customer_warehouse.config import PROJECT_DIR, ConfigError, load_settings

SNAPSHOT_SCHEMA = "snapshots"
SNAPSHOT_TABLE = "customer_tiers_snapshot"
#: Models that depend on the as-of date and feed the snapshot (intersection of two selectors).
TIERS_SELECTION = "int_as_of_date+,+customer_tiers"
#: What customer_tiers needs that does not depend on the as-of date (staging): built once.
STATIC_SELECTION = "+customer_tiers"
STATIC_EXCLUSION = "int_as_of_date+"
#: After the replay: every model that depends on the as-of date, for the current date.
RESTORE_SELECTION = "int_as_of_date+"
FREQUENCIES = ("day", "week", "month")

Log = Callable[[str], None]


class BackfillError(RuntimeError):
    """The backfill cannot start or a dbt step failed; the message says what to do."""


def as_of_dates(start: date, end: date, every: str) -> list[date]:
    """The as-of dates to replay, in increasing order, always ending with `end`.

    `month` gives the last day of every month from `start`'s month on (month ends are the
    natural reporting dates), `week` every 7 days from `start`, `day` every day.
    """
    if every not in FREQUENCIES:
        raise BackfillError(f"--every {every!r} is not one of {', '.join(FREQUENCIES)}.")
    if start > end:
        raise BackfillError(
            f"--start {start} is after --end {end}. Give a start date on or before the end date."
        )
    dates: list[date] = []
    if every == "month":
        year, month = start.year, start.month
        while True:
            month_end = date(year, month, calendar.monthrange(year, month)[1])
            if month_end > end:
                break
            if month_end >= start:
                dates.append(month_end)
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    else:
        step = timedelta(days=7 if every == "week" else 1)
        current = start
        while current <= end:
            dates.append(current)
            current += step
    if not dates or dates[-1] != end:
        dates.append(end)
    return dates


@dataclass
class DateResult:
    """What one replayed as-of date did."""

    as_of_date: date
    versions_added: int
    seconds: float


@dataclass
class BackfillReport:
    """Summary of a backfill run."""

    dates: list[DateResult] = field(default_factory=list)
    history_versions: int = 0
    transitions: int = 0
    seconds: float = 0.0


class DbtProject:
    """Runs dbt commands in-process on one parsed manifest.

    Parsing happens once (`parse`); every later command reuses the manifest, and the as-of
    date travels in `--vars`, which dbt applies when it compiles each model at run time.
    """

    def __init__(self, project_dir: Path = PROJECT_DIR, profiles_dir: Path | None = None):
        self.project_dir = project_dir
        self.profiles_dir = profiles_dir or project_dir
        self._manifest: Any = None

    def _base_args(self) -> list[str]:
        return [
            "--project-dir",
            str(self.project_dir),
            "--profiles-dir",
            str(self.profiles_dir),
        ]

    def invoke(self, command: Sequence[str], *, as_of: date | None = None) -> None:
        """Run `dbt <command>`; raise BackfillError with dbt's own messages when it fails."""
        from dbt.cli.main import dbtRunner  # imported late: dbt is slow to import

        if self._manifest is None:
            parsed = dbtRunner().invoke(["parse", "--quiet", *self._base_args()])
            if not parsed.success:
                raise BackfillError(
                    f"dbt could not parse the project: {parsed.exception or 'see logs/dbt.log'}. "
                    "Fix the project (`dbt parse` shows the error) and run the backfill again."
                )
            self._manifest = parsed.result
        args = [command[0], "--quiet", *self._base_args(), *command[1:]]
        if as_of is not None:
            args += ["--vars", json.dumps({"as_of_date": as_of.isoformat()})]
        result = dbtRunner(manifest=self._manifest).invoke(args)
        if not result.success:
            raise BackfillError(
                f"dbt {' '.join(command)}"
                + (f" (as of {as_of})" if as_of else "")
                + f" failed: {_failure_summary(result)}"
            )


def _failure_summary(result: Any) -> str:
    """The messages of the failed nodes, or the exception, in one line."""
    if result.exception is not None:
        return str(result.exception)
    messages = []
    for node_result in getattr(result.result, "results", []) or []:
        if str(getattr(node_result, "status", "")).lower() in ("error", "fail"):
            name = getattr(getattr(node_result, "node", None), "name", "?")
            messages.append(f"{name}: {node_result.message}")
    return "; ".join(messages) or "see logs/dbt.log"


def _connect(warehouse_path: Path) -> duckdb.DuckDBPyConnection:
    # dbt does the heavy work through profiles.yml; these connections get the same limits.
    config = load_settings(require_raw_dir=False).duckdb_config
    return duckdb.connect(str(warehouse_path), config=config)


def _table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        con.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = ? and table_name = ?",
            [schema, table],
        ).fetchone()[0]
    )


def history_end(warehouse_path: Path) -> date | None:
    """The last as-of date in the tier history, or None when there is no history yet."""
    if not warehouse_path.exists():
        return None
    with _connect(warehouse_path) as con:
        if not _table_exists(con, SNAPSHOT_SCHEMA, SNAPSHOT_TABLE):
            return None
        return con.execute(
            f"select max(as_of_date) from {SNAPSHOT_SCHEMA}.{SNAPSHOT_TABLE}"
        ).fetchone()[0]


def _count(warehouse_path: Path, schema: str, table: str) -> int:
    with _connect(warehouse_path) as con:
        if not _table_exists(con, schema, table):
            return 0
        return con.execute(f"select count(*) from {schema}.{table}").fetchone()[0]


def _check_loaded(warehouse_path: Path) -> None:
    if warehouse_path.exists():
        with _connect(warehouse_path) as con:
            if _table_exists(con, "raw", "orders"):
                return
    raise BackfillError(
        f"{warehouse_path} holds no raw orders. Load the warehouse first (`make run`, or "
        "`python -m customer_warehouse.raw_load`), then run the backfill."
    )


def backfill(
    dates: Sequence[date],
    *,
    warehouse_path: Path,
    reset: bool = False,
    restore: bool = True,
    dbt: DbtProject | None = None,
    log: Log = print,
) -> BackfillReport:
    """Replay `dates` (increasing) into the tier history; see the module docstring."""
    started = time.monotonic()
    dates = list(dates)
    if not dates:
        raise BackfillError("No as-of dates to replay: give a --start on or before --end.")
    if dates != sorted(set(dates)):
        raise BackfillError("The as-of dates must be distinct and in increasing order.")
    _check_loaded(warehouse_path)
    dbt = dbt or DbtProject()

    end_of_history = history_end(warehouse_path)
    if reset and end_of_history is not None:
        with _connect(warehouse_path) as con:
            con.execute(f"drop table if exists {SNAPSHOT_SCHEMA}.{SNAPSHOT_TABLE}")
        log(f"reset: dropped the tier history (it ran up to {end_of_history})")
        end_of_history = None
    if end_of_history is not None and dates[0] <= end_of_history:
        raise BackfillError(
            f"The tier history already runs up to {end_of_history}, so {dates[0]} cannot be "
            "added after it (history grows in as-of order). Start after "
            f"{end_of_history}, or pass --reset to rebuild the whole history from {dates[0]}."
        )

    log(f"backfill: {len(dates)} as-of dates from {dates[0]} to {dates[-1]} into {warehouse_path}")
    step_started = time.monotonic()
    dbt.invoke(["seed"])
    dbt.invoke(["run", "--select", STATIC_SELECTION, "--exclude", STATIC_EXCLUSION])
    log(f"  seeds and staging built [{time.monotonic() - step_started:.1f}s]")

    report = BackfillReport()
    versions = _count(warehouse_path, SNAPSHOT_SCHEMA, SNAPSHOT_TABLE)
    width = len(str(len(dates)))
    for number, as_of in enumerate(dates, start=1):
        step_started = time.monotonic()
        dbt.invoke(["run", "--select", TIERS_SELECTION], as_of=as_of)
        dbt.invoke(["snapshot", "--select", SNAPSHOT_TABLE], as_of=as_of)
        now_versions = _count(warehouse_path, SNAPSHOT_SCHEMA, SNAPSHOT_TABLE)
        seconds = time.monotonic() - step_started
        report.dates.append(DateResult(as_of, now_versions - versions, seconds))
        versions = now_versions
        elapsed = time.monotonic() - started
        remaining = elapsed / number * (len(dates) - number)
        log(
            f"  [{number:>{width}}/{len(dates)}] as of {as_of}: "
            f"+{report.dates[-1].versions_added:,} versions ({versions:,} in history) "
            f"[{seconds:.1f}s, about {remaining:.0f}s left]"
        )

    if restore:
        step_started = time.monotonic()
        dbt.invoke(["run", "--select", RESTORE_SELECTION])
        log(
            "  marts rebuilt for the current as-of date, transitions included "
            f"[{time.monotonic() - step_started:.1f}s]"
        )
    report.history_versions = versions
    report.transitions = _count(warehouse_path, "marts", "customer_tier_transitions")
    report.seconds = time.monotonic() - started
    log(
        f"done: {report.history_versions:,} versions in the tier history, "
        f"{report.transitions:,} transitions, {report.seconds:.1f}s"
    )
    return report


def _parse_date(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BackfillError(
            f"{option} {value!r} is not a date. Write it as YYYY-MM-DD, e.g. {option} 2025-01-31."
        ) from None


def _default_end(warehouse_path: Path, requested: date | None) -> date:
    """CW_AS_OF_DATE when set, else the last accepted order date (what a daily run uses)."""
    if requested is not None:
        return requested
    with _connect(warehouse_path) as con:
        if _table_exists(con, "staging", "stg_shop__orders"):
            last = con.execute("select max(ordered_date) from staging.stg_shop__orders").fetchone()
            if last and last[0] is not None:
                return last[0]
    raise BackfillError(
        "No --end given and no staged orders to take the last order date from. "
        "Pass --end YYYY-MM-DD, or build the warehouse first (`make run`)."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m customer_warehouse.backfill",
        description="Rebuild the tier history (SCD2 snapshot) for a range of past as-of dates.",
    )
    parser.add_argument("--start", required=True, help="first as-of date, YYYY-MM-DD")
    parser.add_argument(
        "--end", help="last as-of date (default: CW_AS_OF_DATE, else the last order date)"
    )
    parser.add_argument(
        "--every", choices=FREQUENCIES, default="month", help="spacing of the dates (month ends)"
    )
    parser.add_argument(
        "--reset", action="store_true", help="drop the existing tier history and rebuild it"
    )
    parser.add_argument(
        "--no-restore",
        action="store_true",
        help="leave the marts as of the last replayed date instead of the current as-of date",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(require_raw_dir=False)
        _check_loaded(settings.warehouse_path)
        start = _parse_date(args.start, "--start")
        end = (
            _parse_date(args.end, "--end")
            if args.end
            else _default_end(settings.warehouse_path, settings.as_of_date)
        )
        backfill(
            as_of_dates(start, end, args.every),
            warehouse_path=settings.warehouse_path,
            reset=args.reset,
            restore=not args.no_restore,
        )
    except (BackfillError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
