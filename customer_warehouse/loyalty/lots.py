"""The window's customers and their lines: every lot they hold (posted and not clawed back,
with what expired of it, or new), the clawback that ends a lot in this window, and the
redemptions and adjustments in the order they are judged.

Reads the posted ledger and the temporary tables of ``gather.py``; writes the temporary tables
``_lw_customers``, ``_lw_lots`` and ``_lw_requests``.
"""

from __future__ import annotations

import duckdb

from customer_warehouse.loyalty.duck import run_sql
from customer_warehouse.loyalty.rules import LoyaltyRules
from customer_warehouse.loyalty.schema import (
    ADJUST_LOT,
    ADJUST_REQUEST,
    EARN_LOT,
    LEDGER_TABLE,
    REDEEM_REQUEST,
)


def gather_lots(con: duckdb.DuckDBPyConnection, params: dict, rules: LoyaltyRules) -> None:
    """The customers of the window, their lots and their requests, as temporary tables."""
    months = rules.points_expiry_months
    expires = f"available_at + to_months({months})" if months else "cast(null as timestamp)"
    run_sql(con, _CUSTOMERS, params)
    lots = _LOTS.format(pending=rules.pending_days, expires=expires)
    run_sql(con, lots, params)
    con.execute(_REQUESTS)


# The window's customers, numbered: new events, or a posted lot expiring in the window.
_CUSTOMERS = f"""
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
"""

# The posted lots of the window's customers, not clawed back, with what expired of them.
_POSTED_LOTS = f"""
    ledger as (
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
            case when ledger.movement_type = 'earn' then {EARN_LOT} else {ADJUST_LOT} end
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
    )
"""

# The new lots: earns (pending for {{pending}} days) and positive adjustments.
_FRESH_LOTS = f"""
    fresh as (
        select
            customers.cust_no, {EARN_LOT} as lot_kind, earn.order_id as lot_ref,
            earn.lot_at, earn.points, earn.lot_at + to_days({{pending}}) as available_at,
            earn.level, earn.event_at, earn.is_birthday_month, earn.level_note
        from _lw_earn as earn
        inner join _lw_customers as customers on earn.customer_id = customers.customer_id
        union all
        select
            customers.cust_no, {ADJUST_LOT}, adjust.adjustment_id, adjust.booked_at,
            adjust.points, adjust.booked_at, null, adjust.event_at, null, null
        from _lw_adjust as adjust
        inner join _lw_customers as customers on adjust.customer_id = customers.customer_id
        where adjust.points > 0
    )
"""

# Every lot in their lines, with the clawback that ends a lot in this window. Not sorted here.
_LOTS = f"""
    create temp table _lw_lots as
    with {_POSTED_LOTS}, {_FRESH_LOTS},
    lots as (
        select * from posted
        union all
        select
            cust_no, lot_kind, lot_ref, lot_at, points, available_at, {{expires}}, level, 0,
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
        on lots.lot_kind = {EARN_LOT} and lots.lot_ref = claws.order_id
"""

# Redemptions and adjustments, in the order they are judged within a customer and instant.
_REQUESTS = f"""
    create temp table _lw_requests as
    with requests as (
        select
            customer_id, {REDEEM_REQUEST} as request_kind, redemption_id as request_id,
            event_at, booked_at, copy_number, coalesce(points, 0) as amount,
            points as requested, invalid_reason, cast(null as varchar) as reason
        from _lw_redeem
        union all
        select
            customer_id, {ADJUST_REQUEST}, adjustment_id, event_at, booked_at, 1, points,
            null, null, reason
        from _lw_adjust
    )
    select customers.cust_no, requests.*, lots.rowid as lot_rowid
    from requests
    inner join _lw_customers as customers on requests.customer_id = customers.customer_id
    left join _lw_lots as lots
        on requests.request_kind = {ADJUST_REQUEST} and lots.lot_kind = {ADJUST_LOT}
            and lots.is_new and lots.lot_ref = requests.request_id
    order by customers.cust_no, requests.booked_at, requests.request_kind,
        requests.request_id, requests.copy_number
"""
