"""Posting runs: append the window since the last posted day and rebuild the balances, all in
one transaction (:func:`post_ledger`), or drop everything and post one window up to a date
(:func:`rebuild_ledger`).

Reads the upstream tables, the seeds and the as-of date; writes the four marts tables through
the step modules: ``gather``/``lots`` (temporary tables) → ``window`` → ``settle`` →
``append`` → ``daily`` → ``balances``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import duckdb

from customer_warehouse.loyalty import settle as settlement
from customer_warehouse.loyalty.append import append_window
from customer_warehouse.loyalty.balances import rebuild_balances
from customer_warehouse.loyalty.daily import append_days, read_horizon
from customer_warehouse.loyalty.duck import Timer, run_sql
from customer_warehouse.loyalty.gather import gather_events
from customer_warehouse.loyalty.lots import gather_lots
from customer_warehouse.loyalty.rules import LoyaltyRules, load_rules
from customer_warehouse.loyalty.schema import (
    ADJUSTMENTS_TABLE,
    APPEND_ONLY,
    BALANCES_TABLE,
    BEGINNING,
    BIRTH_MONTHS_TABLE,
    DAILY_TABLE,
    LEDGER_TABLE,
    ORDERS_TABLE,
    REDEMPTIONS_TABLE,
    REJECTS_TABLE,
    TEMP_TABLES,
)
from customer_warehouse.loyalty.window import load_window, order_events
from customer_warehouse.warehouse import read_as_of_date, require_tables, scalar, transaction


@dataclass
class LoyaltyReport:
    """What one posting run did, for logs and Dagster metadata."""

    as_of_date: date
    window_start: datetime | None  # None: nothing to post (the window was empty)
    window_end: datetime
    entries_posted: int = 0
    rejects_posted: int = 0
    days_posted: int = 0
    late_entries: int = 0
    customers_in_window: int = 0
    settle_passes: int = 0
    movement_counts: dict[str, int] = field(default_factory=dict)
    reject_reasons: dict[str, int] = field(default_factory=dict)
    balances: int = 0
    points_outstanding: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def post_ledger(
    con: duckdb.DuckDBPyConnection,
    as_of_date: date | None = None,
    rules: LoyaltyRules | None = None,
) -> LoyaltyReport:
    """Append the entries of the window up to the end of ``as_of_date`` and rebuild the
    balances as of that date; all in one transaction (a failure leaves every table as it was).

    ``as_of_date`` defaults to ``intermediate.int_as_of_date``, ``rules`` to the seeds.
    """
    as_of_date = as_of_date or read_as_of_date(con)
    rules = rules or load_rules(con)
    require_tables(
        con,
        [ORDERS_TABLE, BIRTH_MONTHS_TABLE, REDEMPTIONS_TABLE, ADJUSTMENTS_TABLE],
        "run the dbt models first (dbt build, or materialize the upstream assets)",
    )
    con.execute("create schema if not exists marts")
    for table, columns in APPEND_ONLY:
        con.execute(f"create table if not exists {table} ({columns})")
    with transaction(con):
        report = _post(con, as_of_date, rules)
        with Timer(report.seconds)("balances"):
            report.balances, report.points_outstanding = rebuild_balances(con, as_of_date, rules)
    return report


def rebuild_ledger(
    con: duckdb.DuckDBPyConnection,
    as_of_date: date | None = None,
    rules: LoyaltyRules | None = None,
) -> LoyaltyReport:
    """The full recompute: drop the ledger, rejects and daily table and post everything up to
    ``as_of_date`` in one window. Rewrites the past — for a new installation or after a rule
    change that must apply to history, never in the daily run."""
    with transaction(con):
        for table in (*(table for table, _columns in APPEND_ONLY), BALANCES_TABLE):
            con.execute(f"drop table if exists {table}")
    return post_ledger(con, as_of_date, rules)


def _post(con: duckdb.DuckDBPyConnection, as_of_date: date, rules: LoyaltyRules) -> LoyaltyReport:
    end = datetime.combine(as_of_date + timedelta(days=1), time())
    horizon = read_horizon(con)
    if horizon is None and scalar(con, f"select count(*) from {LEDGER_TABLE}"):
        raise ValueError(
            f"{LEDGER_TABLE} holds entries but {DAILY_TABLE} is empty, so the posted horizon "
            "is unknown. Rebuild the ledger (customer_warehouse.loyalty.rebuild_ledger)."
        )
    start = BEGINNING if horizon is None else datetime.combine(horizon + timedelta(1), time())
    report = LoyaltyReport(as_of_date=as_of_date, window_start=None, window_end=end)
    if start >= end:
        return report  # posted already: nothing is ever posted twice or rewritten
    report.window_start = None if horizon is None else start
    params = {"start": start, "end": end, "as_of": as_of_date}
    timer = Timer(report.seconds)
    # Inside the caller's transaction: on a failure the rollback drops the temporary tables.
    with timer("gather"):
        gather_events(con, params, rules)
        gather_lots(con, params, rules)
    with timer("load"):
        window = load_window(con, params)
    report.customers_in_window = len(window.b0)
    with timer("order"):
        events = order_events(window, params)
    with timer("settle"):
        settled, report.settle_passes = settlement.settle(events, window)
    with timer("append"):
        append_window(con, params, window, events, settled)
    for name in TEMP_TABLES:
        con.execute(f"drop table {name}")
    _count_posted(con, params, report)
    with timer("days"):
        report.days_posted = append_days(con, params, rules)
    return report


def _count_posted(con: duckdb.DuckDBPyConnection, params: dict, report: LoyaltyReport) -> None:
    counts = run_sql(
        con,
        f"""
        select movement_type, count(*), count(*) filter (where event_at < occurred_at)
        from {LEDGER_TABLE} where posted_as_of = $as_of
        group by movement_type order by movement_type
        """,
        params,
    ).fetchall()
    report.movement_counts = {kind: count for kind, count, _late in counts}
    report.entries_posted = sum(report.movement_counts.values())
    report.late_entries = sum(late for _kind, _count, late in counts)
    report.reject_reasons = dict(
        run_sql(
            con,
            f"""
            select reject_reason, count(*) from {REJECTS_TABLE} where posted_as_of = $as_of
            group by reject_reason order by reject_reason
            """,
            params,
        ).fetchall()
    )
    report.rejects_posted = sum(report.reject_reasons.values())
