"""Loyalty points: an append-only ledger of dated point movements, and what is derived from it.

Rules (the numbers come from the dbt seeds ``seeds/loyalty_rules.csv`` and
``seeds/loyalty_level_multipliers.csv``; the behaviour below lives only here):

* **Earn.** Every order with status completed, cancelled or refunded earns at ``ordered_at``
  ``floor(amount × base_points_per_currency_unit × level multiplier × birthday multiplier)``
  points, computed in exact decimal arithmetic. The level multiplier is that of
  ``membership_level_at_order``: the level the customer held at the moment of the order, from
  what was known at that moment (``int_orders_joined_to_membership_levels``: an order refunded
  or cancelled *later* still counted then), so a later refund never changes the points an
  earlier order earned. An unknown or missing level earns with multiplier 1 and says so in
  ``note``. The birthday multiplier applies when the UTC month of ``ordered_at`` is the
  customer's birth month; it is folded into the single ``earn`` entry and flagged by
  ``is_birthday_month`` (one entry, one lot, one clawback per order). An order earning 0
  points produces no entry.
* **Pending.** Earned points are *pending* for ``pending_days`` days (the return window):
  ``available_at`` = the order's time + ``pending_days``. Pending points are in the balance but
  cannot be redeemed, and nothing but their own order's clawback takes them. 0 = available at
  once. ``pending_days`` must stay below the shortest expiry (28 days per month).
* **Lots and expiry.** Each earn (and each positive adjustment) is a lot. It expires
  ``points_expiry_months`` calendar months after it became available (after the order itself
  when ``pending_days`` is 0; same time of day; day clamped to the month's end; 0 = never).
  What is left of a lot at that moment leaves in one ``expire`` entry dated at the expiry
  moment.
* **FIFO.** Redemptions, the spent part of a clawback and negative adjustments consume the
  available lots in the order they became available (same moment: the older lot, then earn
  before adjustment, then by id) — oldest first.
* **Redeem.** A redemption (``staging.stg_shop__redemptions``) needing more points than the
  available balance at that moment (non-expired, not pending) is refused with
  ``insufficient_balance`` and that available balance (never clamped). Also refused:
  ``invalid_points`` (empty, zero, negative, fractional) and ``duplicate_redemption_id`` (a
  later row with an id already seen).
* **Clawback.** A cancelled or refunded order gives back, at ``status_changed_at``, the points
  it earned: first what is left of its own lot, then — for the part of that lot already
  spent — points from the other available lots, oldest first. Points of that lot that already
  expired are not taken again (the customer lost them already). What cannot be taken because
  the available balance is exhausted is recorded in ``points_shortfall`` and ``note``; the
  balance never goes negative. A missing ``status_changed_at`` (or one before ``ordered_at``)
  dates the clawback at ``ordered_at``, with a note.
* **Adjustments.** Manual adjustments (``staging.stg_shop__point_adjustments``, the file
  ``point_adjustments.csv``, docs/raw-data.md) with a reason code from
  ``seeds/point_adjustment_reasons.csv``: a positive one is a lot like an earn (available at
  once, expires ``points_expiry_months`` after it); a negative one takes points from the
  available lots oldest first, never more than the available balance (the rest is
  ``points_shortfall``).
* **Same timestamp order:** expire → earn → redeem → clawback → adjust; within a type by
  order_id / redemption_id / adjustment_id (expiries by lot age). So points expiring at
  instant t cannot be spent at t, points earned (and available) at t can, and a redemption at
  t is judged before a clawback at t. Pending points becoming available at t can be spent at t.
* **As-of.** A run as of date D knows the events up to the end of D (``< D + 1 day``): orders
  placed, cancellations and refunds recorded, redemptions, adjustments, expiries.

The ledger (``marts.loyalty_points_ledger``) is **append-only**:

* Every entry is keyed by its event: ``movement_id`` is ``earn:<order_id>``,
  ``clawback:<order_id>``, ``redeem:<redemption_id>``, ``adjust:<adjustment_id>``,
  ``expire:<order_id>`` or ``expire:adjust:<adjustment_id>``; an entry's lot is its
  ``order_id`` (or ``adjustment_id``). No entry is ever updated or deleted.
* A run as of D posts the entries of the **window** [H, D + 1 day), where H (the horizon) is
  the day after the last as-of date posted (``marts.loyalty_liability_daily`` holds one row per
  posted day): the entries whose event happened by the end of D and that are not posted yet,
  computed from the state the posted entries left. A rerun for a posted day, or a run for an
  earlier date than the last one posted, posts nothing (its window is empty) and only rebuilds
  ``marts.loyalty_balances`` as of its date from the posted ledger (entries up to that date).
* An event that arrives after its day was posted (a refund recorded late, a late export) is
  posted at H, the start of the first open window (``occurred_at`` = H, ``event_at`` = when it
  happened, with a note). So the past never moves: the balance on any date is
  ``sum(points)`` of the entries with ``occurred_at`` before the end of that day, now and later.
  A lot posted late counts its pending days and expiry from H.
* ``movement_seq`` numbers a customer's entries in ledger order and ``balance_after`` is the
  running balance; ``posted_as_of`` is the as-of date of the run that posted the entry (the
  only column that depends on which runs were made).
* A chain of runs in which no event is late posts exactly the entries a single run as of the
  last date posts (:func:`rebuild_ledger`, the full recompute), whatever the dates were, in
  whatever order, however often repeated.

Derived tables (all from the ledger):

* ``marts.loyalty_redemption_rejects`` (append-only like the ledger): refused redemptions with
  the reason and the available balance at that moment.
* ``marts.loyalty_liability_daily`` (append-only): one row per day up to the last as-of date:
  points outstanding (pending + available) at the end of the day, pending, available, the day's
  movements by type, and the liability in money (outstanding × ``point_value``, the seed's
  value at the run that posted the day).
* ``marts.loyalty_balances`` (rebuilt every run, as of the run's date): per customer balance,
  available and pending points, totals, the points expiring within ``expiring_soon_days`` after
  the as-of date and the next expiry date, and — levels are spend- and order-based
  (``seeds/tiers/membership_levels.csv``), not points-based — the spend and orders still needed
  to keep the level or reach the next (from ``int_customers_evaluated_for_membership_levels``
  when it was computed for the same as-of date; null otherwise).

How (set-based, no loop per customer): DuckDB SQL gathers the window's events and the lots
(earns, positive adjustments) of the customers concerned; numpy settles them for all
customers at once. A customer's *line* is their lots not expired and not clawed back, laid end
to end in the order they became available; consumption is oldest-first, so what is consumed
is always a prefix of the line: one number per customer, the pointer P, and the available
balance is the end of the line's available part minus P (pending lots sit at the top). An
expiry moves P to the end of its lot (``P = max(P, end_j)``), consumption moves it forward
(``P += points``), a clawback removes its lot from the line (later lots move down by its size)
and is capped by the available points. A month-end clamp (Jan 31 + 1 month = Feb 28, time of
day kept) can make a lot expire before one that became available earlier; such an expiry
takes its lot out of the line instead, like a clawback. With the per-event steps known, P over
the whole event stream is one cumulative sum and one running maximum. The steps that depend on
the state — whether a redemption fits, whether a clawback or negative adjustment is capped,
what an expired lot lost, what a clamped expiry leaves — are first assumed (accepted,
uncapped, nothing), then checked against the states the pass computed; every event whose
assumption was wrong gets the value the pass computed, and the pass is repeated for the
customers concerned only. The first wrong event of a customer is always right after one pass
(everything before it was right), so this ends; in practice after a handful of passes, the
later ones on a few customers. The per-customer state machine these rules describe is kept as
the test oracle (tests/loyalty_reference.py).
"""

from __future__ import annotations

import re
import time as clock
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ORDERS_TABLE = "intermediate.int_orders_joined_to_membership_levels"
BIRTH_MONTHS_TABLE = "intermediate.int_customer_birth_months"
REDEMPTIONS_TABLE = "staging.stg_shop__redemptions"
ADJUSTMENTS_TABLE = "staging.stg_shop__point_adjustments"
AS_OF_TABLE = "intermediate.int_as_of_date"
LEVEL_GAPS_TABLE = "intermediate.int_customers_evaluated_for_membership_levels"
RULES_TABLE = "seeds.loyalty_rules"
LEVELS_TABLE = "seeds.loyalty_level_multipliers"

LEDGER_TABLE = "marts.loyalty_points_ledger"
BALANCES_TABLE = "marts.loyalty_balances"
REJECTS_TABLE = "marts.loyalty_redemption_rejects"
DAILY_TABLE = "marts.loyalty_liability_daily"

EARNING_STATUSES = ("completed", "cancelled", "refunded")
CLAWBACK_STATUSES = ("cancelled", "refunded")

#: Order of movements that share a timestamp (documented in the module docstring).
MOVEMENT_RANK: Mapping[str, int] = {
    "expire": 0,
    "earn": 1,
    "redeem": 2,
    "clawback": 3,
    "adjust": 4,
}
REDEMPTION_REJECT_REASONS = ("invalid_points", "duplicate_redemption_id", "insufficient_balance")

# Event kinds of the scan, in same-timestamp order ("avail" = pending points become available;
# it is not an entry, only the moment from which a redemption may use them).
_EXPIRE, _AVAIL, _EARN, _REDEEM, _CLAW, _ADJUST = range(6)
_BEGINNING = datetime(1, 1, 1)  # the horizon of an empty ledger
_MAX_POINTS = 2**40  # per customer; keeps the packed running maximum inside int64


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoyaltyRules:
    """The numbers of the program (from the seeds); behaviour is in this module's docstring."""

    base_points_per_currency_unit: Decimal
    birthday_month_multiplier: Decimal
    points_expiry_months: int  # 0 = points never expire
    level_multipliers: Mapping[str, Decimal]  # keys lower-case
    pending_days: int = 0
    expiring_soon_days: int = 30
    point_value: Decimal = Decimal(0)  # money per point, reporting currency

    def __post_init__(self) -> None:
        for name in ("base_points_per_currency_unit", "birthday_month_multiplier", "point_value"):
            object.__setattr__(self, name, _decimal(getattr(self, name)))
        object.__setattr__(
            self,
            "level_multipliers",
            {str(k).strip().lower(): _decimal(v) for k, v in self.level_multipliers.items()},
        )
        problems = []
        for name in ("base_points_per_currency_unit", "birthday_month_multiplier", "point_value"):
            if getattr(self, name) < 0:
                problems.append(f"{name} is negative")
        for name in ("points_expiry_months", "pending_days", "expiring_soon_days"):
            value = getattr(self, name)
            if int(value) != value or value < 0:
                problems.append(f"{name} must be a whole number >= 0")
        if (
            not problems
            and self.points_expiry_months
            and (self.pending_days >= 28 * self.points_expiry_months)
        ):
            problems.append(
                f"pending_days ({self.pending_days}) must be shorter than the shortest expiry "
                f"({self.points_expiry_months} months = {28 * self.points_expiry_months} days)"
            )
        problems += [
            f"multiplier of level {k!r} is negative"
            for k, v in self.level_multipliers.items()
            if v < 0
        ]
        if problems:
            raise ValueError(
                "Invalid loyalty rules: " + "; ".join(problems) + ". Fix seeds/loyalty_rules.csv "
                "or seeds/loyalty_level_multipliers.csv and run `dbt seed` again."
            )
        for name in ("points_expiry_months", "pending_days", "expiring_soon_days"):
            object.__setattr__(self, name, int(getattr(self, name)))


_REQUIRED_RULES = (
    "base_points_per_currency_unit",
    "birthday_month_multiplier",
    "points_expiry_months",
    "pending_days",
    "expiring_soon_days",
    "point_value",
)
_WHOLE_RULES = ("points_expiry_months", "pending_days", "expiring_soon_days")


def load_rules(con: duckdb.DuckDBPyConnection) -> LoyaltyRules:
    """The rules from the seed tables ``seeds.loyalty_rules`` and its level multipliers.

    Read at run time, not hard-coded, so a rule change is a reviewed seed change.
    """
    _require_tables(con, [RULES_TABLE, LEVELS_TABLE], "run `dbt seed` first")
    values: dict[str, Decimal] = {}
    for rule, value in con.execute(f"select rule, value from {RULES_TABLE}").fetchall():
        key = str(rule).strip().lower()
        if key in values:
            raise ValueError(
                f"Rule {key!r} appears twice in {RULES_TABLE}. Keep one row per rule in "
                "seeds/loyalty_rules.csv and run `dbt seed` again."
            )
        try:
            values[key] = _decimal(value)
        except ValueError as exc:
            raise ValueError(
                f"Rule {key!r} in {RULES_TABLE} has the value {value!r}, which is not a number. "
                "Fix seeds/loyalty_rules.csv and run `dbt seed` again."
            ) from exc
    missing = [rule for rule in _REQUIRED_RULES if rule not in values]
    if missing:
        raise ValueError(
            f"{RULES_TABLE} lacks the rule(s) {', '.join(missing)}. Add them to "
            "seeds/loyalty_rules.csv (columns rule,value,description) and run `dbt seed` again."
        )
    levels: dict[str, Decimal] = {}
    for level, multiplier in con.execute(
        f"select membership_level, multiplier from {LEVELS_TABLE}"
    ).fetchall():
        key = str(level).strip().lower()
        if key in levels:
            raise ValueError(
                f"Membership level {key!r} appears twice in {LEVELS_TABLE}. Keep one row per "
                "level in seeds/loyalty_level_multipliers.csv and run `dbt seed` again."
            )
        levels[key] = _decimal(multiplier)
    whole = {
        name: int(values[name]) if values[name] == int(values[name]) else -1  # -1 → clear error
        for name in _WHOLE_RULES
    }
    return LoyaltyRules(
        base_points_per_currency_unit=values["base_points_per_currency_unit"],
        birthday_month_multiplier=values["birthday_month_multiplier"],
        level_multipliers=levels,
        point_value=values["point_value"],
        **whole,
    )


def _decimal(value: Any) -> Decimal:
    """Exact decimal of a number; floats go through their shortest repr (0.29 → 0.29)."""
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, float):
        result = Decimal(repr(value))
    else:
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation as exc:
            raise ValueError(f"{value!r} is not a number") from exc
    if not result.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return result


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

_LEDGER_INSERTED = """
    customer_id, movement_seq, occurred_at, movement_type, points, order_id, redemption_id,
    adjustment_id, adjustment_reason, membership_level_at_order, is_birthday_month,
    available_at, lot_expires_at, points_shortfall, balance_after, note, event_at, posted_as_of
"""
# movement_id is computed from the entry's type and event id when read, never stored.
_LEDGER_COLUMNS = """
    movement_id varchar generated always as (
        movement_type || ':' || case movement_type
            when 'redeem' then redemption_id
            when 'adjust' then adjustment_id
            else coalesce(order_id, 'adjust:' || adjustment_id)
        end
    ) virtual,
    customer_id varchar, movement_seq bigint, occurred_at timestamp,
    movement_type varchar, points bigint, order_id varchar,
    redemption_id varchar, adjustment_id varchar, adjustment_reason varchar,
    membership_level_at_order varchar, is_birthday_month boolean, available_at timestamp,
    lot_expires_at timestamp, points_shortfall bigint, balance_after bigint, note varchar,
    event_at timestamp, posted_as_of date
"""
_REJECT_COLUMNS = """
    redemption_id varchar, customer_id varchar, redeemed_at timestamp, points bigint,
    reject_reason varchar, available_balance bigint, decided_at timestamp, posted_as_of date
"""
_DAILY_COLUMNS = """
    day date, points_outstanding bigint, points_pending bigint, points_available bigint,
    points_earned bigint, points_redeemed bigint, points_expired bigint,
    points_clawed_back bigint, points_adjusted bigint, point_value decimal(18, 6),
    liability_amount decimal(38, 2), posted_as_of date
"""
_APPEND_ONLY = ((LEDGER_TABLE, _LEDGER_COLUMNS), (REJECTS_TABLE, _REJECT_COLUMNS))
_APPEND_ONLY += ((DAILY_TABLE, _DAILY_COLUMNS),)


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


def read_as_of_date(con: duckdb.DuckDBPyConnection) -> date:
    """The warehouse's as-of date, decided once by the dbt model ``intermediate.int_as_of_date``."""
    _require_tables(con, [AS_OF_TABLE], "run the dbt models first (or pass as_of_date)")
    row = con.execute(f"select max(as_of_date) from {AS_OF_TABLE}").fetchone()
    if row is None or row[0] is None:
        raise ValueError(f"{AS_OF_TABLE} is empty; run the dbt models first (or pass as_of_date).")
    return row[0]


def read_horizon(con: duckdb.DuckDBPyConnection) -> date | None:
    """The last as-of date posted (the ledger holds every event up to its end), or None."""
    if not _table_exists(con, DAILY_TABLE):
        return None
    return con.execute(f"select max(day) from {DAILY_TABLE}").fetchone()[0]


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
    _require_tables(
        con,
        [ORDERS_TABLE, BIRTH_MONTHS_TABLE, REDEMPTIONS_TABLE, ADJUSTMENTS_TABLE],
        "run the dbt models first (dbt build, or materialize the upstream assets)",
    )
    con.execute("create schema if not exists marts")
    for table, columns in _APPEND_ONLY:
        con.execute(f"create table if not exists {table} ({columns})")
    con.begin()
    try:
        report = _post(con, as_of_date, rules)
        started = clock.perf_counter()
        report.balances, report.points_outstanding = _rebuild_balances(con, as_of_date, rules)
        report.seconds["balances"] = clock.perf_counter() - started
        con.commit()
    except BaseException:
        con.rollback()
        raise
    return report


def rebuild_ledger(
    con: duckdb.DuckDBPyConnection,
    as_of_date: date | None = None,
    rules: LoyaltyRules | None = None,
) -> LoyaltyReport:
    """The full recompute: drop the ledger, rejects and daily table and post everything up to
    ``as_of_date`` in one window. Rewrites the past — for a new installation or after a rule
    change that must apply to history, never in the daily run."""
    con.begin()
    try:
        for table in (*(table for table, _columns in _APPEND_ONLY), BALANCES_TABLE):
            con.execute(f"drop table if exists {table}")
        con.commit()
    except BaseException:
        con.rollback()
        raise
    return post_ledger(con, as_of_date, rules)


# --------------------------------------------------------------------------------------------
# Posting one window
# --------------------------------------------------------------------------------------------


def _post(con: duckdb.DuckDBPyConnection, as_of_date: date, rules: LoyaltyRules) -> LoyaltyReport:
    end = datetime.combine(as_of_date + timedelta(days=1), time())
    horizon = read_horizon(con)
    if horizon is None and con.execute(f"select count(*) from {LEDGER_TABLE}").fetchone()[0]:
        raise ValueError(
            f"{LEDGER_TABLE} holds entries but {DAILY_TABLE} is empty, so the posted horizon "
            "is unknown. Rebuild the ledger (customer_warehouse.loyalty.rebuild_ledger)."
        )
    start = _BEGINNING if horizon is None else datetime.combine(horizon + timedelta(1), time())
    report = LoyaltyReport(as_of_date=as_of_date, window_start=None, window_end=end)
    if start >= end:
        return report  # posted already: nothing is ever posted twice or rewritten
    report.window_start = None if horizon is None else start
    params = {"start": start, "end": end, "as_of": as_of_date}
    timer = _Timer(report.seconds)
    # Inside the caller's transaction: on a failure the rollback drops the temporary tables.
    with timer("gather"):
        _gather(con, params, rules)
    with timer("load"):
        window = _load(con, params)
    report.customers_in_window = len(window.b0)
    with timer("order"):
        events = _order_events(window, params)
    with timer("settle"):
        settled, report.settle_passes = _settle(events, window)
    with timer("append"):
        _append(con, params, window, events, settled)
    for name in _TEMP_TABLES:
        con.execute(f"drop table {name}")
    _count_posted(con, params, report)
    with timer("days"):
        report.days_posted = _append_days(con, params, rules)
    return report


_TEMP_TABLES = (
    "_lw_factors",
    "_lw_orders",
    "_lw_earn",
    "_lw_claw",
    "_lw_redeem",
    "_lw_adjust",
    "_lw_customers",
    "_lw_lots",
    "_lw_requests",
)
# Kinds of lots and requests in the temporary tables (small integers, not text).
_EARN_LOT, _ADJUST_LOT = 0, 1
_REDEEM_REQUEST, _ADJUST_REQUEST = 0, 1
_NEVER = np.iinfo(np.int64).max  # a timestamp that does not exist (no expiry, no clawback)


def _check_orders(con: duckdb.DuckDBPyConnection) -> None:
    """The orders contract, for the orders this window reads (dbt tests guard it upstream)."""
    row = con.execute(
        f"select order_id from {ORDERS_TABLE} where ordered_at is null order by 1 limit 1"
    ).fetchone()
    if row is not None:
        raise ValueError(
            f"Order {row[0]!r} has no ordered_at; {ORDERS_TABLE} must not hold such orders. "
            "Quarantine them in staging."
        )
    statuses = ", ".join(f"'{s}'" for s in EARNING_STATUSES)
    row = con.execute(
        f"""
        select order_id, status, amount from _lw_orders
        where coalesce(lower(trim(status)), '') not in ({statuses})
            or amount is null or amount < 0
        order by order_id
        limit 1
        """
    ).fetchone()
    if row is not None:
        order_id, status, amount = row
        if (status or "").strip().lower() not in EARNING_STATUSES:
            raise ValueError(
                f"Order {order_id!r} has status {status!r}; {ORDERS_TABLE} must only hold "
                f"{', '.join(sorted(EARNING_STATUSES))}. Fix the status mapping "
                "(seeds/order_status_aliases.csv) or filter the model."
            )
        raise ValueError(
            f"Order {order_id!r} has amount {amount!r}; {ORDERS_TABLE} must hold a "
            "non-negative amount in the reporting currency. Quarantine such orders in staging."
        )
    row = con.execute(
        """
        select order_id, min(customer_id) from _lw_orders
        group by order_id having count(*) > 1 order by 1 limit 1
        """
    ).fetchone()
    if row is not None:
        raise ValueError(
            f"Order {row[0]!r} of customer {row[1]!r} appears twice in {ORDERS_TABLE}. "
            "The model must have one row per order: check its join to membership levels."
        )


def _gather(con: duckdb.DuckDBPyConnection, params: dict, rules: LoyaltyRules) -> None:
    """The window's requests and every lot they touch, as temporary tables."""
    months, pending = rules.points_expiry_months, rules.pending_days
    expires = f"available_at + to_months({months})" if months else "cast(null as timestamp)"
    ordered_at = _utc(con, ORDERS_TABLE, "ordered_at")
    changed_at = _utc(con, ORDERS_TABLE, "status_changed_at")
    redeemed_at = _utc(con, REDEMPTIONS_TABLE, "redeemed_at")
    adjusted_at = _utc(con, ADJUSTMENTS_TABLE, "adjusted_at")
    _register_factors(con, rules)

    # Orders without an earn entry, up to the end of the window (an order placed before the
    # window that has none arrived late). An order earns once: a later copy of it with another
    # date or amount (a corrected export) does not post a second earn, whatever its new date.
    # The contract is checked on them.
    _sql(
        con,
        f"""
        create temp table _lw_orders as
        select
            cast(customer_id as varchar) as customer_id,
            cast(order_id as varchar) as order_id,
            {ordered_at} as event_at,
            amount,
            status,
            membership_level_at_order as level
        from {ORDERS_TABLE}
        where {ordered_at} < $end
            and cast(order_id as varchar) not in (
                select order_id from {LEDGER_TABLE} where movement_type = 'earn')
        """,
        params,
    )
    _check_orders(con)
    _sql(
        con,
        f"""
        create temp table _lw_earn as
        with orders as (
            select
                orders.*,
                coalesce(month(orders.event_at) = births.birth_month, false) as is_birthday_month
            from _lw_orders as orders
            left join {BIRTH_MONTHS_TABLE} as births
                on orders.customer_id = cast(births.customer_id as varchar)
        )
        select
            orders.customer_id,
            orders.order_id,
            orders.event_at,
            greatest(orders.event_at, $start) as lot_at,
            orders.level,
            orders.is_birthday_month,
            cast(floor(cast(orders.amount as decimal(38, 2)) * case
                when orders.is_birthday_month
                    then coalesce(
                        factors.birthday_factor,
                        cast($unknown_birthday_factor as decimal(38, 18))
                    )
                else coalesce(factors.factor, cast($unknown_factor as decimal(38, 18)))
            end) as bigint) as points,
            case when factors.level_key is null then 'membership level '
                || coalesce('''' || orders.level || '''', 'None')
                || ' has no multiplier in {LEVELS_TABLE}: multiplier 1 used'
            end as level_note
        from orders
        left join _lw_factors as factors on lower(trim(orders.level)) = factors.level_key
        """,
        params | _factor_params(rules),
    )
    con.execute("delete from _lw_earn where points <= 0")

    # New clawbacks: cancelled/refunded orders whose clawback is not posted yet.
    claws = ", ".join(f"'{s}'" for s in CLAWBACK_STATUSES)
    _sql(
        con,
        f"""
        create temp table _lw_claw as
        with orders as (
            select
                cast(order_id as varchar) as order_id,
                {ordered_at} as ordered_at,
                {changed_at} as changed_at
            from {ORDERS_TABLE}
            where lower(trim(status)) in ({claws}) and {ordered_at} < $end
        ),
        dated as (
            select
                *,
                case when changed_at is null or changed_at < ordered_at
                    then ordered_at else changed_at end as event_at,
                case
                    when changed_at is null
                        then 'status_changed_at missing: clawback dated at ordered_at'
                    when changed_at < ordered_at
                        then 'status_changed_at before ordered_at: clawback dated at ordered_at'
                end as claw_note
            from orders
        )
        select
            order_id, event_at, greatest(event_at, $start) as claw_at, claw_note,
            row_number() over (order by order_id) as claw_rank
        from dated
        where event_at < $end
            and order_id not in (
                select order_id from {LEDGER_TABLE} where movement_type = 'clawback')
        """,
        params,
    )

    # New redemptions: rows not decided yet (a decision is an entry or a reject).
    _sql(
        con,
        f"""
        create temp table _lw_redeem as
        with decided as (
            select redemption_id, event_at from {LEDGER_TABLE} where movement_type = 'redeem'
            union all
            select redemption_id, redeemed_at from {REJECTS_TABLE}
        ),
        rows as (
            select
                cast(customer_id as varchar) as customer_id,
                cast(redemption_id as varchar) as redemption_id,
                {redeemed_at} as event_at,
                cast(points as double) as requested
            from {REDEMPTIONS_TABLE}
            where {redeemed_at} < $end
        ),
        numbered as (
            select
                *,
                row_number() over (
                    partition by redemption_id order by event_at, requested nulls first
                ) as copy_number
            from rows
        )
        select
            numbered.customer_id,
            numbered.redemption_id,
            numbered.event_at,
            greatest(numbered.event_at, $start) as booked_at,
            numbered.copy_number,
            case when requested = floor(requested) then cast(requested as bigint) end
                as points,
            case
                when copy_number > 1
                    or numbered.redemption_id in (select redemption_id from decided)
                    then 'duplicate_redemption_id'
                when requested is null or requested <= 0 or requested <> floor(requested)
                    then 'invalid_points'
            end as invalid_reason
        from numbered
        anti join decided
            on numbered.redemption_id = decided.redemption_id
                and numbered.event_at = decided.event_at
        """,
        params,
    )
    _sql(
        con,
        f"""
        create temp table _lw_adjust as
        select
            cast(customer_id as varchar) as customer_id,
            cast(adjustment_id as varchar) as adjustment_id,
            {adjusted_at} as event_at,
            greatest({adjusted_at}, $start) as booked_at,
            cast(points as bigint) as points,
            reason
        from {ADJUSTMENTS_TABLE}
        where {adjusted_at} < $end
            and 'adjust:' || cast(adjustment_id as varchar) not in (
                select movement_id from {LEDGER_TABLE} where movement_type = 'adjust')
        """,
        params,
    )

    # The window's customers, numbered: new events, or a posted lot expiring in the window.
    _sql(
        con,
        f"""
        create temp table _lw_customers as
        select customer_id, row_number() over (order by customer_id) - 1 as cust_no
        from (
            select customer_id from _lw_earn
            union select ledger.customer_id from {LEDGER_TABLE} as ledger
                inner join _lw_claw as claws on ledger.order_id = claws.order_id
                where ledger.movement_type = 'earn'
            union select customer_id from _lw_redeem
            union select customer_id from _lw_adjust
            union select customer_id from {LEDGER_TABLE}
                where lot_expires_at >= $start and lot_expires_at < $end
                    and movement_type in ('earn', 'adjust') and points > 0
        )
        """,
        params,
    )
    # Every lot in their lines: the posted ones not clawed back (with what expired of them)
    # and the new ones, with the clawback that ends a lot in this window. Not sorted here.
    _sql(
        con,
        f"""
        create temp table _lw_lots as
        with ledger as (
            select ledger.*, customers.cust_no
            from {LEDGER_TABLE} as ledger
            inner join _lw_customers as customers on ledger.customer_id = customers.customer_id
        ),
        expired as (
            select coalesce(order_id, 'adjust:' || adjustment_id) as lot_key,
                -sum(points) as expired_points
            from ledger where movement_type = 'expire' group by lot_key
        ),
        posted as (
            select
                ledger.cust_no,
                case when ledger.movement_type = 'earn' then {_EARN_LOT} else {_ADJUST_LOT} end
                    as lot_kind,
                coalesce(ledger.order_id, ledger.adjustment_id) as lot_ref,
                ledger.occurred_at as lot_at, ledger.points, ledger.available_at,
                ledger.lot_expires_at, ledger.membership_level_at_order as level,
                coalesce(expired.expired_points, 0) as expired_points, false as is_new,
                ledger.lot_expires_at < $start as expired_before,
                cast(null as timestamp) as event_at, cast(null as boolean) as is_birthday_month,
                cast(null as varchar) as level_note
            from ledger
            left join expired
                on coalesce(ledger.order_id, 'adjust:' || ledger.adjustment_id) = expired.lot_key
            where ledger.movement_type in ('earn', 'adjust') and ledger.points > 0
                and not exists (
                    select 1 from ledger as claws
                    where claws.movement_type = 'clawback' and claws.order_id = ledger.order_id
                )
        ),
        fresh as (
            select
                customers.cust_no, {_EARN_LOT} as lot_kind, earn.order_id as lot_ref,
                earn.lot_at, earn.points, earn.lot_at + to_days({pending}) as available_at,
                earn.level, earn.event_at, earn.is_birthday_month, earn.level_note
            from _lw_earn as earn
            inner join _lw_customers as customers on earn.customer_id = customers.customer_id
            union all
            select
                customers.cust_no, {_ADJUST_LOT}, adjust.adjustment_id, adjust.booked_at,
                adjust.points, adjust.booked_at, null, adjust.event_at, null, null
            from _lw_adjust as adjust
            inner join _lw_customers as customers on adjust.customer_id = customers.customer_id
            where adjust.points > 0
        ),
        lots as (
            select * from posted
            union all
            select
                cust_no, lot_kind, lot_ref, lot_at, points, available_at, {expires}, level, 0,
                true, false, event_at, is_birthday_month, level_note
            from fresh
        )
        select
            lots.*,
            -- a month-end clamp (Jan 31 + 1 month = Feb 28) can make a lot expire before one
            -- that became available earlier: such an expiry takes the lot out of the line
            coalesce(day(lots.lot_expires_at) < day(lots.available_at), false) as clamped,
            claws.claw_at,
            claws.event_at as claw_event_at,
            claws.claw_note,
            claws.claw_rank
        from lots
        left join _lw_claw as claws
            on lots.lot_kind = {_EARN_LOT} and lots.lot_ref = claws.order_id
        """,
        params,
    )
    # Redemptions and adjustments, in the order they are judged within a customer and instant.
    con.execute(
        f"""
        create temp table _lw_requests as
        with requests as (
            select
                customer_id, {_REDEEM_REQUEST} as request_kind, redemption_id as request_id,
                event_at, booked_at, copy_number, coalesce(points, 0) as amount,
                points as requested, invalid_reason, cast(null as varchar) as reason
            from _lw_redeem
            union all
            select
                customer_id, {_ADJUST_REQUEST}, adjustment_id, event_at, booked_at, 1, points,
                null, null, reason
            from _lw_adjust
        )
        select customers.cust_no, requests.*, lots.rowid as lot_rowid
        from requests
        inner join _lw_customers as customers on requests.customer_id = customers.customer_id
        left join _lw_lots as lots
            on requests.request_kind = {_ADJUST_REQUEST} and lots.lot_kind = {_ADJUST_LOT}
                and lots.is_new and lots.lot_ref = requests.request_id
        order by customers.cust_no, requests.booked_at, requests.request_kind,
            requests.request_id, requests.copy_number
        """
    )


def _factor_params(rules: LoyaltyRules) -> dict[str, str]:
    base, birthday = rules.base_points_per_currency_unit, rules.birthday_month_multiplier
    return {
        "unknown_factor": _factor_text(base),
        "unknown_birthday_factor": _factor_text(base * birthday),
    }


def _register_factors(con: duckdb.DuckDBPyConnection, rules: LoyaltyRules) -> None:
    """Points per currency unit for every level, without and with the birthday multiplier:
    the products are exact in Python and exact in decimal(38, 18) (checked)."""
    base, birthday = rules.base_points_per_currency_unit, rules.birthday_month_multiplier
    rows = [
        (level, _factor_text(base * multiplier), _factor_text(base * multiplier * birthday))
        for level, multiplier in rules.level_multipliers.items()
    ]
    con.execute(
        "create temp table _lw_factors (level_key varchar, factor decimal(38, 18), "
        "birthday_factor decimal(38, 18))"
    )
    if rows:
        con.executemany("insert into _lw_factors values (?, ?, ?)", rows)


def _factor_text(value: Decimal) -> str:
    if value != value.quantize(Decimal("1e-18")):
        raise ValueError(
            f"The points factor {value} has more than 18 decimals, so it cannot be applied "
            "exactly. Use fewer decimals in seeds/loyalty_rules.csv or "
            "seeds/loyalty_level_multipliers.csv."
        )
    return format(value, "f")


# --------------------------------------------------------------------------------------------
# The window in memory: lots in line order, requests, events in ledger order (Arrow, numpy)
# --------------------------------------------------------------------------------------------


@dataclass
class _Window:
    """The window's lots (in line order), requests and customers, as Arrow and numpy."""

    lots: pa.Table  # the lots as read (row = line_order[lot number])
    line_order: np.ndarray  # row of ``lots`` of each lot number
    requests: pa.Table  # text columns of the requests, in judging order (row = request number)
    customer_ids: pa.Array  # by customer number
    lot: dict[str, np.ndarray]
    request: dict[str, np.ndarray]
    b0: np.ndarray  # per customer: balance, last movement_seq, line end, available end at H
    seq0: np.ndarray
    t0: np.ndarray
    tav0: np.ndarray


def _load(con: duckdb.DuckDBPyConnection, params: dict) -> _Window:
    """Fetch the lots once; their numbers are put in line order (a narrow sort in DuckDB), their
    text stays where it is and is taken only for the entries written."""
    table = _arrow(
        con,
        f"""
        select
            rowid as row_id,
            *,
            epoch_us(lot_at) as lot_at_us,
            epoch_us(available_at) as available_at_us,
            coalesce(epoch_us(lot_expires_at), {_NEVER}) as expires_at_us,
            coalesce(epoch_us(claw_at), {_NEVER}) as claw_at_us,
            coalesce(claw_rank, 0) as claw_order
        from _lw_lots
        """,
        {},
    )
    row_ids = _numbers(table.column("row_id"))
    base = int(row_ids.min()) if len(row_ids) else 0
    if not np.array_equal(row_ids - base, np.arange(len(row_ids))):
        raise RuntimeError("_lw_lots was not read in row order")
    line_order = (
        _numbers(
            _arrow(
                con,
                "select rowid as row_id from _lw_lots "
                "order by cust_no, available_at, lot_at, lot_kind, lot_ref",
                {},
            ).column("row_id")
        )
        - base
    )
    lot_number = np.empty(len(line_order), dtype=np.int64)
    lot_number[line_order] = np.arange(len(line_order))
    requests = _arrow(con, "select *, epoch_us(booked_at) as booked_at_us from _lw_requests", {})
    request_lots = _numbers(requests.column("lot_rowid"), missing=-1)
    customers = _arrow(
        con,
        f"""
        with posted as (
            select customer_id, sum(points) as b0, max(movement_seq) as seq0
            from {LEDGER_TABLE}
            where customer_id in (select customer_id from _lw_customers)
            group by customer_id
        ),
        lines as (
            select
                cust_no,
                sum(points) as t0,
                coalesce(sum(points) filter (where available_at < $start), 0) as tav0
            from _lw_lots
            where not is_new and not expired_before
            group by cust_no
        )
        select
            customers.customer_id,
            coalesce(posted.b0, 0) as b0,
            coalesce(posted.seq0, 0) as seq0,
            coalesce(lines.t0, 0) as t0,
            coalesce(lines.tav0, 0) as tav0
        from _lw_customers as customers
        left join posted on customers.customer_id = posted.customer_id
        left join lines on customers.cust_no = lines.cust_no
        order by customers.cust_no
        """,
        params,
    )
    lots = table

    def in_line(values: np.ndarray) -> np.ndarray:
        return values[line_order]

    return _Window(
        lots=lots,
        line_order=line_order,
        requests=requests,
        customer_ids=customers.column("customer_id").combine_chunks(),
        lot={
            "cust": in_line(_numbers(lots.column("cust_no"))),
            "kind": in_line(_numbers(lots.column("lot_kind"))),
            "points": in_line(_numbers(lots.column("points"))),
            "lot_at": in_line(_numbers(lots.column("lot_at_us"))),
            "available_at": in_line(_numbers(lots.column("available_at_us"))),
            "expires_at": in_line(_numbers(lots.column("expires_at_us"))),
            "claw_at": in_line(_numbers(lots.column("claw_at_us"))),
            "claw_rank": in_line(_numbers(lots.column("claw_order"))),
            "is_new": in_line(_flags(lots.column("is_new"))),
            "expired_before": in_line(_flags(lots.column("expired_before"))),
            "clamped": in_line(_flags(lots.column("clamped"))),
            "expired_points": in_line(_numbers(lots.column("expired_points"))),
        },
        request={
            "cust": _numbers(requests.column("cust_no")),
            "kind": _numbers(requests.column("request_kind")),
            "booked_at": _numbers(requests.column("booked_at_us")),
            "amount": _numbers(requests.column("amount")),
            "valid": _flags(requests.column("invalid_reason").is_null()),
            "lot": np.where(request_lots >= 0, _at(lot_number, request_lots - base), -1),
        },
        b0=_numbers(customers.column("b0")),
        seq0=_numbers(customers.column("seq0")),
        t0=_numbers(customers.column("t0")),
        tav0=_numbers(customers.column("tav0")),
    )


def _numbers(column: pa.ChunkedArray | pa.Array, missing: int = 0) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        column = column.fill_null(missing)
    return column.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _flags(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)


def _order_events(window: _Window, params: dict) -> dict[str, np.ndarray]:
    """Every event of the window in ledger order: (customer, time, kind, then lot or id).

    Each stream is already in that order (lots expire and become available in line order;
    clawbacks and requests are sorted here), so a stable sort on one int64 key — customer,
    second, kind — merges them; events in the same second keep their stream's order, which is
    right when timestamps are whole seconds (else a full lexicographic sort is used).
    """
    lot, request = window.lot, window.request
    start, end = (_epoch_micros(params[name]) for name in ("start", "end"))
    earn = np.flatnonzero(lot["is_new"] & (lot["kind"] == _EARN_LOT))
    avail = np.flatnonzero(
        (lot["available_at"] > lot["lot_at"])
        & (lot["available_at"] >= start)
        & (lot["available_at"] < end)
        & (lot["claw_at"] >= lot["available_at"])
    )
    expire = np.flatnonzero(
        (lot["expires_at"] >= start)
        & (lot["expires_at"] < end)
        & (lot["claw_at"] >= lot["expires_at"])
    )
    claws = np.flatnonzero(lot["claw_at"] != _NEVER)
    claws = claws[np.lexsort((lot["claw_rank"][claws], lot["claw_at"][claws], lot["cust"][claws]))]
    streams = ((earn, "lot_at", _EARN), (avail, "available_at", _AVAIL))
    streams += ((expire, "expires_at", _EXPIRE), (claws, "claw_at", _CLAW))
    n_lots = sum(len(index) for index, _time, _kind in streams)
    n = n_lots + len(request["cust"])
    cust = np.empty(n, dtype=np.int64)
    at = np.empty(n, dtype=np.int64)
    kind = np.empty(n, dtype=np.int8)
    lots_of = np.full(n, -1, dtype=np.int64)
    offset = 0
    for index, time_column, event_kind in streams:
        stop = offset + len(index)
        cust[offset:stop] = lot["cust"][index]
        at[offset:stop] = lot[time_column][index]
        kind[offset:stop] = event_kind
        lots_of[offset:stop] = index
        offset = stop
    cust[n_lots:] = request["cust"]
    at[n_lots:] = request["booked_at"]
    kind[n_lots:] = np.where(request["kind"] == _REDEEM_REQUEST, _REDEEM, _ADJUST)
    lots_of[n_lots:] = request["lot"]
    requests = np.full(n, -1, dtype=np.int64)
    requests[n_lots:] = np.arange(len(request["cust"]))
    order = _ledger_order(cust, at, kind)
    return {
        "cust": cust[order],
        "at": at[order],
        "kind": kind[order],
        "lot": lots_of[order],
        "request": requests[order],
    }


def _at(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[index]`` where index >= 0 (elsewhere a placeholder, masked by the caller)."""
    if len(values) == 0:
        return np.zeros(len(index), dtype=values.dtype)
    return values[np.maximum(index, 0)]


def _epoch_micros(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1)) // timedelta(microseconds=1)


def _ledger_order(cust: np.ndarray, at: np.ndarray, kind: np.ndarray) -> np.ndarray:
    if len(cust) == 0:
        return np.zeros(0, dtype=np.int64)
    seconds, fraction = np.divmod(at, 1_000_000)
    low = int(seconds.min())
    span = int(seconds.max()) - low + 1
    if not fraction.any() and (int(cust.max()) + 1) * span * 8 < 2**63:
        seconds -= low
        seconds *= 8
        seconds += kind
        seconds += cust * (span * 8)
        return np.argsort(seconds, kind="stable")
    return np.lexsort((np.arange(len(cust)), kind, at, cust))


# --------------------------------------------------------------------------------------------
# Settling the window: the consumption pointer of every customer at once (numpy)
# --------------------------------------------------------------------------------------------


def _segment_firsts(keys: np.ndarray) -> np.ndarray:
    """For every element of a sorted key array, the index of the first element with its key."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = keys[1:] != keys[:-1]
    return np.flatnonzero(starts)[np.cumsum(starts) - 1]


def _cumsum_within(values: np.ndarray, firsts: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at every segment; ``firsts``: each element's segment start."""
    total = np.cumsum(values)
    return total - total[firsts] + values[firsts]


def _cummax_within(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Running maximum restarting at every segment; values in [0, 2**41), segments sorted.

    Each segment is lifted above all earlier ones (its rank in the chunk × 2**41), so one
    ``maximum.accumulate`` serves all of them; 2**21 segments at a time keep it inside int64.
    """
    if len(values) == 0:
        return values.copy()
    rank = np.cumsum(np.concatenate(([0], segment[1:] != segment[:-1])))
    out = np.empty_like(values)
    chunk = 2**21
    for low_rank in range(0, int(rank[-1]) + 1, chunk):
        low, high = np.searchsorted(rank, [low_rank, low_rank + chunk])
        lift = (rank[low:high] - low_rank) << 41
        out[low:high] = np.maximum.accumulate(values[low:high] + lift) - lift
    return out


def _walk(
    cust: np.ndarray,
    firsts: np.ndarray,
    step: np.ndarray,
    expiry: np.ndarray,
    end_at: np.ndarray,
    p0: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The pointer before and after each event: P = moved + max(P0, max(end_j - moved_j)) over
    the plain expiries j so far (an expiry moves P to the end of its lot if it is below)."""
    moved = _cumsum_within(step, firsts)
    floor_ = p0[cust]
    floor_[expiry] = np.maximum(floor_[expiry], end_at[expiry] - moved[expiry])
    after = moved + _cummax_within(floor_, cust)
    before = np.empty_like(after)
    before[1:] = after[:-1]
    starts = np.flatnonzero(firsts == np.arange(len(cust)))
    before[starts] = p0[cust[starts]]
    return before, after


@dataclass
class _Settled:
    """The entries (rows ``emitted`` of the event arrays) and refusals (rows ``refused``)."""

    emitted: np.ndarray
    amount: np.ndarray  # per emitted entry: lot size, requested or adjusted points
    points: np.ndarray
    balance_after: np.ndarray
    movement_seq: np.ndarray
    shortfall: np.ndarray
    expired_before: np.ndarray  # clawback: what of its lot had expired
    refused: np.ndarray
    available_before: np.ndarray  # per refused redemption


def _settle(events: dict[str, np.ndarray], window: _Window) -> tuple[_Settled, int]:
    """Every event's effect, all customers at once (the method is in the module docstring).

    The line of a customer is their lots that have not expired or been clawed back, laid end to
    end in the order they became available; P is the pointer below which everything is consumed
    (or, within the window, expired). Tav is the end of the line's available part (pending lots
    are at the top), so the available balance is Tav - P. Only expiries and consuming events
    move P; the passes run on those alone, and after the first pass only on the customers whose
    assumptions were wrong. Full-length arrays are touched only to find and place them.
    """
    cust, kind, lot, request = events["cust"], events["kind"], events["lot"], events["request"]
    lots, requests = window.lot, window.request
    b0, seq0, t0, tav0 = window.b0, window.seq0, window.t0, window.tav0
    p0 = t0 - b0
    if (p0 < 0).any() or (t0 >= _MAX_POINTS).any():
        raise ValueError(
            f"{LEDGER_TABLE} is inconsistent (a balance above its lots, or beyond "
            f"{_MAX_POINTS:,} points). Rebuild the ledger (loyalty.rebuild_ledger)."
        )
    # Every customer of the window has at least one event; events and lots are by customer.
    customers = np.arange(len(b0))
    event_start = np.searchsorted(cust, customers)
    lot_start = np.searchsorted(lots["cust"], customers)

    def within(values: np.ndarray, rows: np.ndarray, starts: np.ndarray, owner: np.ndarray):
        """Cumulative sum of ``values`` (full length) up to ``rows``, within their customer."""
        total = np.cumsum(values)
        first = starts[owner[rows]]
        return total[rows] - total[first] + values[first]

    size = lots["points"]
    amount_of_request = _at(requests["amount"], request)
    expiries = np.flatnonzero(kind == _EXPIRE)
    expiry_lots = lot[expiries]
    clamped = lots["clamped"][expiry_lots]
    expiry_position = np.full(len(size), -1)
    expiry_position[expiry_lots] = expiries
    claws = np.flatnonzero(kind == _CLAW)
    claw_lot = lot[claws]
    # A clawback of a lot no longer in the line (expired before the window, or taken out at a
    # clamped expiry) takes the spent part from the other lots; any other removes its lot.
    claw_out = lots["expired_before"][claw_lot] | (
        lots["clamped"][claw_lot] & (expiry_position[claw_lot] >= 0)
    )
    claw_available = lots["available_at"][claw_lot] <= lots["claw_at"][claw_lot]

    # Tav: lots join the available part when created available (no pending days, a positive
    # adjustment) or at available_at, and leave it when removed from the line.
    earns = np.flatnonzero(kind == _EARN)
    earn_lot = lot[earns]
    d_avail = np.zeros(len(kind), dtype=np.int64)
    d_avail[earns] = np.where(
        lots["available_at"][earn_lot] <= lots["lot_at"][earn_lot], size[earn_lot], 0
    )
    avails = np.flatnonzero(kind == _AVAIL)
    d_avail[avails] = size[lot[avails]]
    adds = np.flatnonzero((request >= 0) & (kind == _ADJUST) & (amount_of_request > 0))
    d_avail[adds] = amount_of_request[adds]
    d_avail[claws] = np.where(~claw_out & claw_available, -size[claw_lot], 0)
    d_avail[expiries[clamped]] = -size[expiry_lots[clamped]]

    # Where each expiring lot lies in the line at that moment: its cumulative size, minus the
    # lots at or before it that left the line before that moment.
    deleted = np.concatenate((claw_lot[~claw_out], expiry_lots[clamped]))
    deleted_at = np.concatenate((claws[~claw_out], expiries[clamped]))
    by_lot = np.argsort(deleted, kind="stable")
    deleted, deleted_at = deleted[by_lot], deleted_at[by_lot]
    deleted_sizes = np.concatenate(([0], np.cumsum(size[deleted])))
    line_size = np.where(lots["expired_before"], 0, size)
    line_end = within(line_size, expiry_lots, lot_start, lots["cust"])
    expiry_owner = lots["cust"][expiry_lots]
    line_end -= (
        deleted_sizes[np.searchsorted(deleted, expiry_lots, side="right")]
        - deleted_sizes[np.searchsorted(deleted, lot_start[expiry_owner], side="left")]
    )
    # A plain expiry comes after everything before it in the line (no clamp): only clawbacks
    # at or after it, of lots at or before it, must be added back (they were still there).
    plain_at, plain_lots = expiries[~clamped], expiry_lots[~clamped]
    in_line = ~claw_out
    low = np.searchsorted(plain_lots, claw_lot[in_line], side="left")
    high = np.searchsorted(plain_at, claws[in_line], side="right")
    keep = low < high
    late = np.zeros(len(plain_at) + 1, dtype=np.int64)
    np.add.at(late, low[keep], size[claw_lot[in_line][keep]])
    np.add.at(late, high[keep], -size[claw_lot[in_line][keep]])
    plain_end = line_end[~clamped] + np.cumsum(late)[:-1]
    # A clamped expiry: pair it with the earlier lots of its customer that left the line.
    clamped_at, clamped_lots = expiries[clamped], expiry_lots[clamped]
    first = np.searchsorted(deleted, lot_start[lots["cust"][clamped_lots]], side="left")
    counts = np.searchsorted(deleted, clamped_lots, side="left") - first
    pair_expiry = np.repeat(np.arange(len(clamped_at)), counts)
    pair_deleted = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    pair_deleted += np.repeat(first, counts)
    still_there = deleted_at[pair_deleted] >= clamped_at[pair_expiry]
    back = np.zeros(len(clamped_at), dtype=np.int64)
    np.add.at(back, pair_expiry[still_there], size[deleted[pair_deleted[still_there]]])
    clamped_start = line_end[clamped] + back  # line_end already left the lot itself out

    # The events that move P, and what each needs.
    moves = np.flatnonzero(
        (kind == _EXPIRE)
        | (kind == _REDEEM)
        | (kind == _CLAW)
        | ((kind == _ADJUST) & (amount_of_request < 0))
    )
    q_cust, q_kind = cust[moves], kind[moves]
    q_lot, q_request = lot[moves], request[moves]
    q_exp = q_kind == _EXPIRE
    q_clamped = q_exp & _at(lots["clamped"], q_lot)
    q_plain = q_exp & ~q_clamped
    q_redeem, q_claw, q_takes = q_kind == _REDEEM, q_kind == _CLAW, q_kind == _ADJUST
    q_size = _at(size, q_lot)
    q_amount = np.where(q_exp | q_claw, q_size, _at(requests["amount"], q_request))
    q_valid = np.where(q_redeem, _at(requests["valid"], q_request), True)
    q_out = np.zeros(len(moves), dtype=bool)
    q_out[np.searchsorted(moves, claws)] = claw_out
    q_known = np.where(
        q_claw & _at(lots["expired_before"], q_lot), _at(lots["expired_points"], q_lot), -1
    )
    q_av_after = tav0[q_cust] + within(d_avail, moves, event_start, cust)
    q_av_before = q_av_after - d_avail[moves]
    q_line = np.zeros(len(moves), dtype=np.int64)  # plain expiry: end; clamped: start
    q_line[np.searchsorted(moves, plain_at)] = plain_end
    q_line[np.searchsorted(moves, clamped_at)] = clamped_start
    claw_expiry = _at(expiry_position, q_lot)
    q_expiry = np.where(
        q_claw & (claw_expiry >= 0), np.searchsorted(moves, np.maximum(claw_expiry, 0)), -1
    )

    def expired_by(before: np.ndarray, after: np.ndarray, step: np.ndarray) -> np.ndarray:
        return np.where(q_plain, after - before, np.where(q_clamped, q_size + step, 0))

    def lost_by(expired: np.ndarray) -> np.ndarray:
        return np.where(q_known >= 0, q_known, np.where(q_expiry >= 0, expired[q_expiry], 0))

    # First assumption: every valid redemption accepted, nothing capped or lost, a clamped
    # expiry's lot untouched.
    step = np.where(q_redeem & q_valid, q_amount, 0)
    step = np.where(q_claw & q_out, q_size - np.maximum(q_known, 0), step)
    step = np.where(q_takes, -q_amount, step)
    before_all = np.zeros(len(moves), dtype=np.int64)
    after_all = np.zeros(len(moves), dtype=np.int64)
    active = np.ones(len(p0), dtype=bool)
    passes = 0
    while len(moves):
        passes += 1
        idx = np.flatnonzero(active[q_cust])
        sub_cust = q_cust[idx]
        sub_firsts = _segment_firsts(sub_cust)
        before, after = _walk(sub_cust, sub_firsts, step[idx], q_plain[idx], q_line[idx], p0)
        before_all[idx], after_all[idx] = before, after
        lost = lost_by(expired_by(before_all, after_all, step))[idx]
        room = q_av_after[idx] - before  # the available balance after the event's own change
        fits = q_valid[idx] & (q_amount[idx] <= q_av_before[idx] - before)
        true_step = np.where(q_redeem[idx] & fits, q_amount[idx], 0)
        true_step = np.where(
            q_claw[idx],
            np.minimum(np.where(q_out[idx], q_size[idx], 0) - lost, room),
            true_step,
        )
        true_step = np.where(q_takes[idx], np.minimum(-q_amount[idx], room), true_step)
        true_step = np.where(
            q_clamped[idx], -np.clip(before - q_line[idx], 0, q_size[idx]), true_step
        )
        wrong = true_step != step[idx]
        if not wrong.any():
            break
        if passes > len(moves):  # cannot happen: each pass settles at least one more event
            raise RuntimeError("the loyalty settlement did not converge")
        step[idx] = true_step
        active[:] = False
        active[sub_cust[wrong]] = True

    expired = expired_by(before_all, after_all, step)
    lost = lost_by(expired)
    fits = q_redeem & (step > 0)
    q_points = np.where(q_exp, -expired, -step)
    q_points = np.where(q_claw & ~q_out, -q_size - step, q_points)
    q_emit = q_claw | q_takes | (q_redeem & fits) | (q_exp & (expired > 0))
    q_shortfall = np.where(q_claw & ~q_out, -step, 0)
    q_shortfall = np.where(q_claw & q_out, q_size - step, q_shortfall)
    q_shortfall = np.where(q_takes, -q_amount - step, q_shortfall)

    # The entries: new lots (earns, positive adjustments) and the moves that post one.
    creations = np.flatnonzero((kind == _EARN) | ((kind == _ADJUST) & (amount_of_request > 0)))
    emitted = np.concatenate((creations, moves[q_emit]))
    order = np.argsort(emitted, kind="stable")
    emitted = emitted[order]
    creation_amount = np.where(
        kind[creations] == _EARN, _at(size, lot[creations]), amount_of_request[creations]
    )
    no_creation = np.zeros(len(creations), dtype=np.int64)
    amount = np.concatenate((creation_amount, q_amount[q_emit]))[order]
    points = np.concatenate((creation_amount, q_points[q_emit]))[order]
    shortfall = np.concatenate((no_creation, q_shortfall[q_emit]))[order]
    expired_before = np.concatenate((no_creation, np.where(q_claw, lost, 0)[q_emit]))[order]
    owner = cust[emitted]
    firsts = _segment_firsts(owner)
    refused = q_redeem & ~fits
    settled = _Settled(
        emitted=emitted,
        amount=amount,
        points=points,
        balance_after=b0[owner] + _cumsum_within(points, firsts),
        movement_seq=seq0[owner] + np.arange(len(emitted)) - firsts + 1,
        shortfall=shortfall,
        expired_before=expired_before,
        refused=moves[refused],
        available_before=(q_av_before - before_all)[refused],
    )
    return settled, passes


# --------------------------------------------------------------------------------------------
# Appending the window, and the tables derived from the ledger
# --------------------------------------------------------------------------------------------

_MOVEMENT_TYPE = f"""
    case kind when {_EXPIRE} then 'expire' when {_EARN} then 'earn' when {_REDEEM} then 'redeem'
        when {_CLAW} then 'clawback' when {_ADJUST} then 'adjust' end
"""


def _append(
    con: duckdb.DuckDBPyConnection,
    params: dict,
    window: _Window,
    events: dict[str, np.ndarray],
    settled: _Settled,
) -> None:
    """Write the window's entries and refused redemptions, assembled column by column."""
    entries = _columns(window, events, settled.emitted) | {
        "amount": pa.array(settled.amount),
        "movement_seq": pa.array(settled.movement_seq),
        "points": pa.array(settled.points),
        "balance_after": pa.array(settled.balance_after),
        "shortfall": pa.array(settled.shortfall),
        "expired_before": pa.array(settled.expired_before),
    }
    con.register("_lw_entries", pa.table(entries))
    _sql(
        con,
        f"""
        insert into {LEDGER_TABLE} ({_LEDGER_INSERTED})
        with entries as (
            select
                *,
                case kind
                    when {_EARN} then lot_event_at
                    when {_CLAW} then claw_event_at
                    when {_EXPIRE} then occurred_at
                    else request_event_at
                end as event_at
            from _lw_entries
        )
        select
            customer_id,
            movement_seq,
            occurred_at,
            {_MOVEMENT_TYPE} as movement_type,
            points,
            case when lot_kind = {_EARN_LOT} and kind <> {_ADJUST} then lot_ref end,
            case when kind = {_REDEEM} then request_id end,
            case when kind = {_ADJUST} then request_id
                when lot_kind = {_ADJUST_LOT} then lot_ref end,
            case when kind = {_ADJUST} then reason end,
            level,
            case when kind = {_EARN} then is_birthday_month end,
            case when kind = {_EARN} or (kind = {_ADJUST} and amount > 0) then available_at end,
            case when kind = {_EARN} or (kind = {_ADJUST} and amount > 0) then lot_expires_at
            end,
            case when kind = {_CLAW} or (kind = {_ADJUST} and amount < 0) then shortfall end,
            balance_after,
            nullif(concat_ws(
                '; ',
                case kind when {_EARN} then level_note when {_CLAW} then claw_note end,
                case
                    when kind = {_CLAW} and shortfall > 0 then 'order earned ' || amount
                        || ' points, ' || shortfall || ' could not be taken back ('
                        || expired_before || ' had already expired, '
                        || (shortfall - expired_before) || ' had been spent and the available'
                        || ' balance did not cover them)'
                    when kind = {_ADJUST} and shortfall > 0 then 'adjustment of ' || amount
                        || ' points: ' || shortfall
                        || ' could not be taken (the available balance did not cover them)'
                end,
                case when event_at < occurred_at then 'posted late: the event ('
                    || strftime(event_at, '%Y-%m-%d %H:%M:%S') || ') arrived after '
                    || strftime($start - interval 1 day, '%Y-%m-%d')
                    || ' had been posted, so it is booked at the start of the next open day'
                end
            ), ''),
            event_at,
            cast($as_of as date)
        from entries
        """,
        params,
    )
    con.unregister("_lw_entries")
    rejects = _columns(window, events, settled.refused) | {
        "available_balance": pa.array(settled.available_before),
    }
    con.register("_lw_refused", pa.table(rejects))
    _sql(
        con,
        f"""
        insert into {REJECTS_TABLE}
        select
            request_id as redemption_id,
            customer_id,
            request_event_at as redeemed_at,
            requested as points,
            coalesce(invalid_reason, 'insufficient_balance') as reject_reason,
            available_balance,
            occurred_at as decided_at,
            cast($as_of as date) as posted_as_of
        from _lw_refused
        """,
        params,
    )
    con.unregister("_lw_refused")


def _columns(
    window: _Window, events: dict[str, np.ndarray], rows: np.ndarray
) -> dict[str, pa.Array]:
    """The text and times of these events' entries, taken from their lots and requests."""
    lot, request = events["lot"][rows], events["request"][rows]
    lot = np.where(lot >= 0, _at(window.line_order, lot), -1)

    def taken(table: pa.Table, index: np.ndarray, name: str) -> pa.Array:
        column = table.column(name).combine_chunks()
        if len(column) == 0:
            return pa.nulls(len(index), column.type)
        values = column.take(pa.array(np.maximum(index, 0)))
        return pc.if_else(pa.array(index >= 0), values, pa.nulls(len(index), column.type))

    lot_columns = [
        "lot_kind",
        "lot_ref",
        "level",
        "is_birthday_month",
        "available_at",
        "lot_expires_at",
        "level_note",
        "claw_note",
        "claw_event_at",
    ]
    request_columns = ["request_id", "reason", "requested", "invalid_reason"]
    return (
        {
            "kind": pa.array(events["kind"][rows]),
            "customer_id": window.customer_ids.take(pa.array(events["cust"][rows])),
            "occurred_at": pa.array(events["at"][rows], pa.timestamp("us")),
            "lot_event_at": taken(window.lots, lot, "event_at"),
            "request_event_at": taken(window.requests, request, "event_at"),
        }
        | {name: taken(window.lots, lot, name) for name in lot_columns}
        | {name: taken(window.requests, request, name) for name in request_columns}
    )


def _count_posted(con: duckdb.DuckDBPyConnection, params: dict, report: LoyaltyReport) -> None:
    counts = _sql(
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
        _sql(
            con,
            f"""
            select reject_reason, count(*) from {REJECTS_TABLE} where posted_as_of = $as_of
            group by reject_reason order by reject_reason
            """,
            params,
        ).fetchall()
    )
    report.rejects_posted = sum(report.reject_reasons.values())


def _append_days(con: duckdb.DuckDBPyConnection, params: dict, rules: LoyaltyRules) -> int:
    """One row per day of the window: outstanding, pending and available points at the end of
    the day, the day's movements, the liability in money."""
    first_day = params["start"].date()
    if params["start"] == _BEGINNING:
        first = con.execute(f"select min(occurred_at) from {LEDGER_TABLE}").fetchone()[0]
        first_day = min(first.date(), params["as_of"]) if first else params["as_of"]
    day_params = params | {
        "first_day": datetime.combine(first_day, time()),
        "point_value": format(rules.point_value, "f"),
    }
    _sql(
        con,
        f"""
        insert into {DAILY_TABLE}
        with days as (
            select cast(unnest(range(
                cast($first_day as date), cast($as_of as date) + 1, interval 1 day
            )) as date) as day
        ),
        flows as (
            select
                cast(occurred_at as date) as day,
                sum(points) as net,
                coalesce(sum(points) filter (where movement_type = 'earn'), 0) as earned,
                -coalesce(sum(points) filter (where movement_type = 'redeem'), 0) as redeemed,
                -coalesce(sum(points) filter (where movement_type = 'expire'), 0) as expired,
                -coalesce(sum(points) filter (where movement_type = 'clawback'), 0) as clawed,
                coalesce(sum(points) filter (where movement_type = 'adjust'), 0) as adjusted
            from {LEDGER_TABLE}
            where occurred_at >= $first_day and occurred_at < $end
            group by 1
        ),
        opening as (
            select coalesce(sum(points), 0) as points
            from {LEDGER_TABLE} where occurred_at < $first_day
        ),
        pending_lots as (
            select
                lots.occurred_at,
                lots.points,
                least(lots.available_at, coalesce(claws.occurred_at, lots.available_at))
                    as stop_at
            from {LEDGER_TABLE} as lots
            left join {LEDGER_TABLE} as claws
                on claws.movement_type = 'clawback' and claws.order_id = lots.order_id
                    and claws.occurred_at < $end
            where lots.movement_type = 'earn' and lots.available_at > lots.occurred_at
                and lots.occurred_at < $end and lots.available_at >= $first_day
        ),
        pending_changes as (
            select greatest(cast(occurred_at as date), cast($first_day as date)) as day, points
            from pending_lots where stop_at >= $first_day
            union all
            select cast(stop_at as date), -points
            from pending_lots where stop_at >= $first_day and stop_at < $end
        ),
        pending_by_day as (
            select day, sum(points) as change from pending_changes group by day
        ),
        running as (
            select
                days.day,
                opening.points + sum(coalesce(flows.net, 0)) over (order by days.day)
                    as points_outstanding,
                sum(coalesce(pending_by_day.change, 0)) over (order by days.day)
                    as points_pending,
                coalesce(flows.earned, 0) as points_earned,
                coalesce(flows.redeemed, 0) as points_redeemed,
                coalesce(flows.expired, 0) as points_expired,
                coalesce(flows.clawed, 0) as points_clawed_back,
                coalesce(flows.adjusted, 0) as points_adjusted
            from days
            cross join opening
            left join flows on days.day = flows.day
            left join pending_by_day on days.day = pending_by_day.day
        )
        select
            day,
            points_outstanding,
            points_pending,
            points_outstanding - points_pending as points_available,
            points_earned,
            points_redeemed,
            points_expired,
            points_clawed_back,
            points_adjusted,
            cast($point_value as decimal(18, 6)) as point_value,
            cast(round(points_outstanding * cast($point_value as decimal(18, 6)), 2)
                as decimal(38, 2)) as liability_amount,
            cast($as_of as date) as posted_as_of
        from running
        order by day
        """,
        day_params,
    )
    return (params["as_of"] - first_day).days + 1


_BALANCE_FIGURES = """
    customer_id, points_balance, points_available, points_pending, points_earned_total,
    points_redeemed_total, points_expired_total, points_clawed_back_total, points_adjusted_total,
    points_expiring_soon, next_expiry_date, last_movement_at, points_value, point_value
"""
_LEVEL_COLUMNS = """
    membership_level, next_membership_level, spend_to_next_level, orders_to_next_level,
    spend_to_keep_level, orders_to_keep_level, membership_level_kept_until
"""


def _rebuild_balances(
    con: duckdb.DuckDBPyConnection, as_of_date: date, rules: LoyaltyRules
) -> tuple[int, int]:
    """``marts.loyalty_balances`` as of ``as_of_date``, from the ledger's entries up to its end.

    When the table holds the balances as of an earlier date P (same rules), only the customers
    whose figures can have changed since are computed again: those with entries or refusals
    after P, and those with a lot that became available, or came within the expiring-soon
    window, after P. Nothing before P can change (entries are only ever appended after the
    last posted day), so the others keep their figures; dates and levels are set for all.
    """
    end = datetime.combine(as_of_date + timedelta(days=1), time())
    params = {
        "end": end,
        "soon": end + timedelta(days=rules.expiring_soon_days),
        "as_of": as_of_date,
        "point_value": format(rules.point_value, "f"),
    }
    previous = _previous_balances(con, rules)
    scope = ""
    if previous is not None and previous <= as_of_date:
        since = datetime.combine(previous + timedelta(days=1), time())
        days = timedelta(days=rules.expiring_soon_days)
        _sql(
            con,
            f"""
            create temp table _lw_changed as
            select customer_id from {LEDGER_TABLE}
                where occurred_at >= $since and occurred_at < $end
                    or available_at >= $since and available_at < $end
                    or lot_expires_at >= $since_soon and lot_expires_at < $soon
            union
            select customer_id from {REJECTS_TABLE}
                where redeemed_at < $end and decided_at >= $since
            """,
            params | {"since": since, "since_soon": since + days},
        )
        con.execute(
            f"""
            create temp table _lw_kept as
            select {_BALANCE_FIGURES} from {BALANCES_TABLE}
            where customer_id not in (select customer_id from _lw_changed)
            """
        )
        scope = "where customer_id in (select customer_id from _lw_changed)"
    _sql(
        con,
        f"""
        create temp table _lw_balances as
        {_balance_figures_sql(scope)}
        {"union all select * from _lw_kept" if scope else ""}
        """,
        params,
    )
    _sql(
        con,
        f"""
        create or replace table {BALANCES_TABLE} as
        select
            balances.* exclude (point_value),
            cast($soon as date) - 1 as expiring_soon_until,
            {", ".join(f"levels.{c.strip()}" for c in _LEVEL_COLUMNS.split(","))},
            balances.point_value,
            cast($as_of as date) as as_of_date
        from _lw_balances as balances
        left join ({_level_source(con, as_of_date)}) as levels
            on balances.customer_id = levels.customer_id
        order by balances.customer_id
        """,
        params,
    )
    for name in ("_lw_balances", "_lw_kept", "_lw_changed"):
        con.execute(f"drop table if exists {name}")
    return con.execute(
        f"select count(*), coalesce(sum(points_balance), 0) from {BALANCES_TABLE}"
    ).fetchone()


def _previous_balances(con: duckdb.DuckDBPyConnection, rules: LoyaltyRules) -> date | None:
    """The date the balances table is as of, if it was computed with these rules."""
    if not _table_exists(con, BALANCES_TABLE):
        return None
    try:
        row = con.execute(
            f"""
            select min(as_of_date), max(as_of_date), count(*),
                bool_and(expiring_soon_until = as_of_date + ?),
                bool_and(point_value = cast(? as decimal(18, 6)))
            from {BALANCES_TABLE}
            """,
            [rules.expiring_soon_days, format(rules.point_value, "f")],
        ).fetchone()
    except duckdb.BinderException:  # a table of an older layout: compute it all again
        return None
    low, high, rows, same_window, same_value = row
    horizon = read_horizon(con)
    posted_through = horizon is not None and low is not None and low <= horizon
    return low if rows and low == high and same_window and same_value and posted_through else None


def _level_source(con: duckdb.DuckDBPyConnection, as_of_date: date) -> str:
    """The level model's rows when it was computed for this date, else no rows (null levels)."""
    if (
        _table_exists(con, LEVEL_GAPS_TABLE)
        and con.execute(
            f"select count(*) > 0 and bool_and(as_of_date = ?) from {LEVEL_GAPS_TABLE}",
            [as_of_date],
        ).fetchone()[0]
    ):
        return f"select customer_id, {_LEVEL_COLUMNS} from {LEVEL_GAPS_TABLE}"
    return (
        "select cast(null as varchar) as customer_id, cast(null as varchar) as "
        "membership_level, cast(null as varchar) as next_membership_level, "
        "cast(null as decimal(18, 2)) as spend_to_next_level, cast(null as integer) as "
        "orders_to_next_level, cast(null as decimal(18, 2)) as spend_to_keep_level, "
        "cast(null as integer) as orders_to_keep_level, cast(null as date) as "
        "membership_level_kept_until where false"
    )


def _balance_figures_sql(scope: str) -> str:
    """Every balance figure of the customers in ``scope`` (a where clause on customer_id)."""
    return f"""
        with ledger as (
            select * from {LEDGER_TABLE} where occurred_at < $end {scope.replace("where", "and")}
        ),
        totals as (
            select
                customer_id,
                sum(points) as points_balance,
                coalesce(sum(points) filter (where movement_type = 'earn'), 0) as earned,
                -coalesce(sum(points) filter (where movement_type = 'redeem'), 0) as redeemed,
                -coalesce(sum(points) filter (where movement_type = 'expire'), 0) as expired,
                -coalesce(sum(points) filter (where movement_type = 'clawback'), 0) as clawed,
                coalesce(sum(points) filter (where movement_type = 'adjust'), 0) as adjusted,
                max(occurred_at) as last_movement_at
            from ledger
            group by customer_id
        ),
        clawed as (
            select order_id from ledger where movement_type = 'clawback'
        ),
        live_lots as (
            -- lots not clawed back and not expired yet, where every point still held sits
            select customer_id, movement_seq, points, available_at, lot_expires_at
            from ledger
            where movement_type in ('earn', 'adjust') and points > 0
                and (lot_expires_at is null or lot_expires_at >= $end)
                and (order_id is null or order_id not in (select order_id from clawed))
        ),
        pending as (
            select customer_id, sum(points) as points_pending
            from live_lots where available_at >= $end group by customer_id
        ),
        available_lots as (
            -- the available part of the line, oldest first: what is consumed is at its bottom
            select
                *,
                sum(points) over (
                    partition by customer_id order by available_at, movement_seq
                    rows between unbounded preceding and current row
                ) as line_end,
                sum(points) over (partition by customer_id) as line_total
            from live_lots where available_at < $end
        ),
        remaining as (
            select
                lots.customer_id,
                lots.lot_expires_at,
                greatest(0, least(
                    lots.points,
                    lots.line_end - (
                        lots.line_total - totals.points_balance
                        + coalesce(pending.points_pending, 0)
                    )
                )) as remaining
            from available_lots as lots
            inner join totals on lots.customer_id = totals.customer_id
            left join pending on lots.customer_id = pending.customer_id
            union all
            select customer_id, lot_expires_at, points from live_lots where available_at >= $end
        ),
        expiring as (
            select
                customer_id,
                coalesce(sum(remaining) filter (where lot_expires_at < $soon), 0)
                    as points_expiring_soon,
                cast(min(lot_expires_at) filter (where remaining > 0) as date)
                    as next_expiry_date
            from remaining
            where lot_expires_at is not null
            group by customer_id
        ),
        customers as (
            select customer_id from totals
            union
            select customer_id from {REJECTS_TABLE} where redeemed_at < $end
                {scope.replace("where", "and")}
        )
        select
            customers.customer_id,
            coalesce(totals.points_balance, 0) as points_balance,
            coalesce(totals.points_balance, 0) - coalesce(pending.points_pending, 0)
                as points_available,
            coalesce(pending.points_pending, 0) as points_pending,
            coalesce(totals.earned, 0) as points_earned_total,
            coalesce(totals.redeemed, 0) as points_redeemed_total,
            coalesce(totals.expired, 0) as points_expired_total,
            coalesce(totals.clawed, 0) as points_clawed_back_total,
            coalesce(totals.adjusted, 0) as points_adjusted_total,
            coalesce(expiring.points_expiring_soon, 0) as points_expiring_soon,
            expiring.next_expiry_date,
            totals.last_movement_at,
            cast(round(coalesce(totals.points_balance, 0)
                * cast($point_value as decimal(18, 6)), 2) as decimal(38, 2)) as points_value,
            cast($point_value as decimal(18, 6)) as point_value
        from customers
        left join totals on customers.customer_id = totals.customer_id
        left join pending on customers.customer_id = pending.customer_id
        left join expiring on customers.customer_id = expiring.customer_id
    """


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


class _Timer:
    """Seconds per phase, into the report (``with timer("gather"): ...``)."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self._seconds = seconds

    def __call__(self, name: str) -> _Timer:
        self._name = name
        return self

    def __enter__(self) -> None:
        self._started = clock.perf_counter()

    def __exit__(self, *_exc: object) -> None:
        self._seconds[self._name] = clock.perf_counter() - self._started


def _utc(con: duckdb.DuckDBPyConnection, table: str, column: str) -> str:
    """The column as a UTC TIMESTAMP: TIMESTAMP columns are UTC already (the staging contract);
    a TIMESTAMP WITH TIME ZONE column is converted, whatever the session's time zone."""
    schema, name = table.split(".", 1)
    row = con.execute(
        "select data_type from information_schema.columns "
        "where table_schema = ? and table_name = ? and column_name = ?",
        [schema, name, column],
    ).fetchone()
    if row is not None and "TIME ZONE" in row[0].upper():
        return f"({column} at time zone 'UTC')"
    return f"cast({column} as timestamp)"


def _sql(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> duckdb.DuckDBPyConnection:
    """Run ``sql`` with the named parameters it uses (DuckDB refuses unused ones)."""
    used = set(re.findall(r"\$([a-z_]+)", sql))
    return con.execute(sql, {name: value for name, value in params.items() if name in used})


def _arrow(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> pa.Table:
    """A query's result as an Arrow table (no row-by-row copy)."""
    used = set(re.findall(r"\$([a-z_]+)", sql))
    chosen = {name: value for name, value in params.items() if name in used}
    return con.sql(sql, params=chosen or None).to_arrow_table()


def _table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    schema, name = table.split(".", 1)
    return bool(
        con.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = ? and table_name = ?",
            [schema, name],
        ).fetchone()[0]
    )


def _require_tables(con: duckdb.DuckDBPyConnection, tables: Sequence[str], fix: str) -> None:
    missing = [table for table in tables if not _table_exists(con, table)]
    if missing:
        raise LookupError(f"Table(s) {', '.join(missing)} not found in the warehouse: {fix}.")
