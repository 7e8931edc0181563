"""Gathering a window's new events: the orders not earned yet (checked against their contract)
with the points they earn, the clawbacks, redemptions and adjustments not posted yet.

Reads the upstream tables (orders with their level, birth months, redemptions, adjustments)
and the posted ledger and rejects; writes the temporary tables ``_lw_factors``,
``_lw_orders``, ``_lw_earn``, ``_lw_claw``, ``_lw_redeem`` and ``_lw_adjust``. The lots and
requests of the customers concerned are ``lots.py``'s.
"""

from __future__ import annotations

from decimal import Decimal

import duckdb

from customer_warehouse.loyalty.duck import run_sql, utc
from customer_warehouse.loyalty.rules import LoyaltyRules
from customer_warehouse.loyalty.schema import (
    ADJUSTMENTS_TABLE,
    BIRTH_MONTHS_TABLE,
    CLAWBACK_STATUSES,
    EARNING_STATUSES,
    LEDGER_TABLE,
    LEVELS_TABLE,
    ORDERS_TABLE,
    REDEMPTIONS_TABLE,
    REJECTS_TABLE,
)


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


def _event_keys(id_column: str, time_column: str) -> str:
    """Select items of an upstream event row: its customer and id as text, and its time as
    ``event_at`` (``{time_column}``: the UTC expression, filled in when the statement runs)."""
    return (
        f"cast(customer_id as varchar) as customer_id, "
        f"cast({id_column} as varchar) as {id_column}, {{{time_column}}} as event_at"
    )


def gather_events(con: duckdb.DuckDBPyConnection, params: dict, rules: LoyaltyRules) -> None:
    """The window's new events, as temporary tables (``params``: start, end, as_of)."""
    ordered_at = utc(con, ORDERS_TABLE, "ordered_at")
    _register_factors(con, rules)
    # Orders without an earn entry, up to the end of the window (an order placed before the
    # window that has none arrived late). An order earns once: a later copy of it with another
    # date or amount (a corrected export) does not post a second earn, whatever its new date.
    # The contract is checked on them.
    run_sql(con, _ORDERS.format(ordered_at=ordered_at), params)
    _check_orders(con)
    run_sql(con, _EARN, params | _factor_params(rules))
    con.execute("delete from _lw_earn where points <= 0")
    changed_at = utc(con, ORDERS_TABLE, "status_changed_at")
    run_sql(con, _CLAWS.format(ordered_at=ordered_at, changed_at=changed_at), params)
    redeemed_at = utc(con, REDEMPTIONS_TABLE, "redeemed_at")
    run_sql(con, _REDEMPTIONS.format(redeemed_at=redeemed_at), params)
    adjusted_at = utc(con, ADJUSTMENTS_TABLE, "adjusted_at")
    run_sql(con, _ADJUSTMENTS.format(adjusted_at=adjusted_at), params)


_ORDERS = f"""
    create temp table _lw_orders as
    select
        {_event_keys("order_id", "ordered_at")},
        amount,
        status,
        membership_level_at_order as level
    from {ORDERS_TABLE}
    where {{ordered_at}} < $end
        and cast(order_id as varchar) not in (
            select order_id from {LEDGER_TABLE} where movement_type = 'earn')
"""

# The points of each new order: exact decimals, floored; the birthday month folded in.
_EARN = f"""
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
"""

# New clawbacks: cancelled/refunded orders whose clawback is not posted yet.
_CLAWS = f"""
    create temp table _lw_claw as
    with orders as (
        select
            cast(order_id as varchar) as order_id,
            {{ordered_at}} as ordered_at,
            {{changed_at}} as changed_at
        from {ORDERS_TABLE}
        where lower(trim(status)) in ({_quoted(CLAWBACK_STATUSES)}) and {{ordered_at}} < $end
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
"""

# New redemptions: rows not decided yet (a decision is an entry or a reject).
_REDEMPTIONS = f"""
    create temp table _lw_redeem as
    with decided as (
        select redemption_id, event_at from {LEDGER_TABLE} where movement_type = 'redeem'
        union all
        select redemption_id, redeemed_at from {REJECTS_TABLE}
    ),
    rows as (
        select
            {_event_keys("redemption_id", "redeemed_at")},
            cast(points as double) as requested
        from {REDEMPTIONS_TABLE}
        where {{redeemed_at}} < $end
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
"""

_ADJUSTMENTS = f"""
    create temp table _lw_adjust as
    select
        {_event_keys("adjustment_id", "adjusted_at")},
        greatest({{adjusted_at}}, $start) as booked_at,
        cast(points as bigint) as points,
        reason
    from {ADJUSTMENTS_TABLE}
    where {{adjusted_at}} < $end
        and 'adjust:' || cast(adjustment_id as varchar) not in (
            select movement_id from {LEDGER_TABLE} where movement_type = 'adjust')
"""


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
    row = con.execute(
        f"""
        select order_id, status, amount from _lw_orders
        where coalesce(lower(trim(status)), '') not in ({_quoted(EARNING_STATUSES)})
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
