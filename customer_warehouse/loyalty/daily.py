"""The daily liability: one row per day of the window with the points outstanding, pending and
available at the end of the day, the day's movements by type and the liability in money.

Reads the posted ledger; appends to ``marts.loyalty_liability_daily``, whose last day is the
ledger's horizon (:func:`read_horizon`).
"""

from __future__ import annotations

from datetime import date, datetime, time

import duckdb

from customer_warehouse.loyalty.duck import run_sql
from customer_warehouse.loyalty.rules import LoyaltyRules
from customer_warehouse.loyalty.schema import BEGINNING, DAILY_TABLE, LEDGER_TABLE, MOVEMENT_SUMS
from customer_warehouse.warehouse import scalar, table_exists

# The days, the movements of each and the balance before the first.
_FLOWS = f"""
    days as (
        select cast(unnest(range(
            cast($first_day as date), cast($as_of as date) + 1, interval 1 day
        )) as date) as day
    ),
    flows as (
        select
            cast(occurred_at as date) as day,
            sum(points) as net,
            {MOVEMENT_SUMS}
        from {LEDGER_TABLE}
        where occurred_at >= $first_day and occurred_at < $end
        group by 1
    ),
    opening as (
        select coalesce(sum(points), 0) as points
        from {LEDGER_TABLE} where occurred_at < $first_day
    )
"""

# Pending points: an earn adds its points from its day until it becomes available (or is
# clawed back first).
_PENDING = f"""
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
    )
"""

_RUNNING = """
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
"""

_INSERT_DAYS = f"""
    insert into {DAILY_TABLE}
    with {_FLOWS}, {_PENDING}, {_RUNNING}
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
"""


def append_days(con: duckdb.DuckDBPyConnection, params: dict, rules: LoyaltyRules) -> int:
    """Append the window's days (from its first entry when the ledger was empty); how many."""
    first_day = params["start"].date()
    if params["start"] == BEGINNING:
        first = con.execute(f"select min(occurred_at) from {LEDGER_TABLE}").fetchone()[0]
        first_day = min(first.date(), params["as_of"]) if first else params["as_of"]
    day_params = params | {
        "first_day": datetime.combine(first_day, time()),
        "point_value": format(rules.point_value, "f"),
    }
    run_sql(con, _INSERT_DAYS, day_params)
    return (params["as_of"] - first_day).days + 1


def read_horizon(con: duckdb.DuckDBPyConnection) -> date | None:
    """The last as-of date posted (the ledger holds every event up to its end), or None."""
    if not table_exists(con, DAILY_TABLE):
        return None
    return scalar(con, f"select max(day) from {DAILY_TABLE}")
