"""The balances as of a date: per customer balance, available and pending points, totals by
type, the points expiring soon and the next expiry date, and what the membership level still
needs (from the level model when it was computed for the same date).

Reads the posted ledger and rejects, the previous balances and
``intermediate.int_customers_evaluated_for_membership_levels``; replaces
``marts.loyalty_balances`` (temporary tables ``_lw_changed``, ``_lw_kept``, ``_lw_balances``
on the way).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import duckdb

from customer_warehouse.loyalty.daily import read_horizon
from customer_warehouse.loyalty.duck import run_sql
from customer_warehouse.loyalty.rules import LoyaltyRules
from customer_warehouse.loyalty.schema import (
    BALANCES_TABLE,
    LEDGER_TABLE,
    LEVEL_GAPS_TABLE,
    MOVEMENT_SUMS,
    REJECTS_TABLE,
)
from customer_warehouse.warehouse import scalar, table_exists

_BALANCE_FIGURES = """
    customer_id, points_balance, points_available, points_pending, points_earned_total,
    points_redeemed_total, points_expired_total, points_clawed_back_total, points_adjusted_total,
    points_expiring_soon, next_expiry_date, last_movement_at, points_value, point_value
"""
_LEVEL_COLUMNS = """
    membership_level, next_membership_level, spend_to_next_level, orders_to_next_level,
    spend_to_keep_level, orders_to_keep_level, membership_level_kept_until
"""
_NO_LEVELS = (
    "select cast(null as varchar) as customer_id, cast(null as varchar) as "
    "membership_level, cast(null as varchar) as next_membership_level, "
    "cast(null as decimal(18, 2)) as spend_to_next_level, cast(null as integer) as "
    "orders_to_next_level, cast(null as decimal(18, 2)) as spend_to_keep_level, "
    "cast(null as integer) as orders_to_keep_level, cast(null as date) as "
    "membership_level_kept_until where false"
)

# The customers whose figures can have changed since the balances as of an earlier date.
_CHANGED = f"""
    create temp table _lw_changed as
    select customer_id from {LEDGER_TABLE}
        where occurred_at >= $since and occurred_at < $end
            or available_at >= $since and available_at < $end
            or lot_expires_at >= $since_soon and lot_expires_at < $soon
    union
    select customer_id from {REJECTS_TABLE}
        where redeemed_at < $end and decided_at >= $since
"""
_KEPT = f"""
    create temp table _lw_kept as
    select {_BALANCE_FIGURES} from {BALANCES_TABLE}
    where customer_id not in (select customer_id from _lw_changed)
"""
_CHANGED_ONLY = "and customer_id in (select customer_id from _lw_changed)"

# The figures, over the ledger up to the end of the date ({scope}: all or the changed ones).
_TOTALS = f"""
    ledger as (
        select * from {LEDGER_TABLE} where occurred_at < $end {{scope}}
    ),
    totals as (
        select
            customer_id,
            sum(points) as points_balance,
            {MOVEMENT_SUMS},
            max(occurred_at) as last_movement_at
        from ledger
        group by customer_id
    )
"""
_LIVE_LOTS = """
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
    )
"""
_EXPIRING = """
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
    )
"""
_FIGURES = f"""
    create temp table _lw_balances as
    with {_TOTALS}, {_LIVE_LOTS}, {_EXPIRING},
    customers as (
        select customer_id from totals
        union
        select customer_id from {REJECTS_TABLE} where redeemed_at < $end
            {{scope}}
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
    {{kept}}
"""
_REPLACE = f"""
    create or replace table {BALANCES_TABLE} as
    select
        balances.* exclude (point_value),
        cast($soon as date) - 1 as expiring_soon_until,
        {", ".join(f"levels.{c.strip()}" for c in _LEVEL_COLUMNS.split(","))},
        balances.point_value,
        cast($as_of as date) as as_of_date
    from _lw_balances as balances
    left join ({{levels}}) as levels
        on balances.customer_id = levels.customer_id
    order by balances.customer_id
"""


def rebuild_balances(
    con: duckdb.DuckDBPyConnection, as_of_date: date, rules: LoyaltyRules
) -> tuple[int, int]:
    """``marts.loyalty_balances`` as of ``as_of_date``, from the ledger's entries up to its end;
    returns the number of balances and the points outstanding.

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
    scope = kept = ""
    if previous is not None and previous <= as_of_date:
        since = datetime.combine(previous + timedelta(days=1), time())
        days = timedelta(days=rules.expiring_soon_days)
        run_sql(con, _CHANGED, params | {"since": since, "since_soon": since + days})
        con.execute(_KEPT)
        scope, kept = _CHANGED_ONLY, "union all select * from _lw_kept"
    run_sql(con, _FIGURES.format(scope=scope, kept=kept), params)
    run_sql(con, _REPLACE.format(levels=_level_source(con, as_of_date)), params)
    for name in ("_lw_balances", "_lw_kept", "_lw_changed"):
        con.execute(f"drop table if exists {name}")
    return con.execute(
        f"select count(*), coalesce(sum(points_balance), 0) from {BALANCES_TABLE}"
    ).fetchone()


def _previous_balances(con: duckdb.DuckDBPyConnection, rules: LoyaltyRules) -> date | None:
    """The date the balances table is as of, if it was computed with these rules."""
    if not table_exists(con, BALANCES_TABLE):
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
    if table_exists(con, LEVEL_GAPS_TABLE) and scalar(
        con,
        f"select count(*) > 0 and bool_and(as_of_date = ?) from {LEVEL_GAPS_TABLE}",
        [as_of_date],
    ):
        return f"select customer_id, {_LEVEL_COLUMNS} from {LEVEL_GAPS_TABLE}"
    return _NO_LEVELS
