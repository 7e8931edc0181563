"""Appending a settled window: its entries to the ledger and its refused redemptions to the
rejects, assembled column by column from the window's lots and requests.

Reads the window and the settlement (arrays, no table); appends to
``marts.loyalty_points_ledger`` and ``marts.loyalty_redemption_rejects``.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from customer_warehouse.loyalty.duck import run_sql
from customer_warehouse.loyalty.schema import (
    ADJUST,
    ADJUST_LOT,
    CLAW,
    EARN,
    EARN_LOT,
    EXPIRE,
    LEDGER_INSERTED,
    LEDGER_TABLE,
    REDEEM,
    REJECTS_TABLE,
)
from customer_warehouse.loyalty.settle import Settled
from customer_warehouse.loyalty.window import Window, at

_MOVEMENT_TYPE = f"""
    case kind when {EXPIRE} then 'expire' when {EARN} then 'earn' when {REDEEM} then 'redeem'
        when {CLAW} then 'clawback' when {ADJUST} then 'adjust' end
"""
_CREATES_LOT = f"kind = {EARN} or (kind = {ADJUST} and amount > 0)"

# Why an entry is as it is: the level or clawback date note, what could not be taken, lateness.
_NOTE = f"""
    nullif(concat_ws(
        '; ',
        case kind when {EARN} then level_note when {CLAW} then claw_note end,
        case
            when kind = {CLAW} and shortfall > 0 then 'order earned ' || amount
                || ' points, ' || shortfall || ' could not be taken back ('
                || expired_before || ' had already expired, '
                || (shortfall - expired_before) || ' had been spent and the available'
                || ' balance did not cover them)'
            when kind = {ADJUST} and shortfall > 0 then 'adjustment of ' || amount
                || ' points: ' || shortfall
                || ' could not be taken (the available balance did not cover them)'
        end,
        case when event_at < occurred_at then 'posted late: the event ('
            || strftime(event_at, '%Y-%m-%d %H:%M:%S') || ') arrived after '
            || strftime($start - interval 1 day, '%Y-%m-%d')
            || ' had been posted, so it is booked at the start of the next open day'
        end
    ), '')
"""

_INSERT_ENTRIES = f"""
    insert into {LEDGER_TABLE} ({LEDGER_INSERTED})
    with entries as (
        select
            *,
            case kind
                when {EARN} then lot_event_at
                when {CLAW} then claw_event_at
                when {EXPIRE} then occurred_at
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
        case when lot_kind = {EARN_LOT} and kind <> {ADJUST} then lot_ref end,
        case when kind = {REDEEM} then request_id end,
        case when kind = {ADJUST} then request_id
            when lot_kind = {ADJUST_LOT} then lot_ref end,
        case when kind = {ADJUST} then reason end,
        level,
        case when kind = {EARN} then is_birthday_month end,
        case when {_CREATES_LOT} then available_at end,
        case when {_CREATES_LOT} then lot_expires_at end,
        case when kind = {CLAW} or (kind = {ADJUST} and amount < 0) then shortfall end,
        balance_after,
        {_NOTE},
        event_at,
        cast($as_of as date)
    from entries
"""

_INSERT_REJECTS = f"""
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
"""

_LOT_COLUMNS = (
    "lot_kind",
    "lot_ref",
    "level",
    "is_birthday_month",
    "available_at",
    "lot_expires_at",
    "level_note",
    "claw_note",
    "claw_event_at",
)
_REQUEST_COLUMNS = ("request_id", "reason", "requested", "invalid_reason")


def append_window(
    con: duckdb.DuckDBPyConnection,
    params: dict,
    window: Window,
    events: dict[str, np.ndarray],
    settled: Settled,
) -> None:
    """Write the window's entries and refused redemptions."""
    entries = _columns(window, events, settled.emitted) | {
        "amount": pa.array(settled.amount),
        "movement_seq": pa.array(settled.movement_seq),
        "points": pa.array(settled.points),
        "balance_after": pa.array(settled.balance_after),
        "shortfall": pa.array(settled.shortfall),
        "expired_before": pa.array(settled.expired_before),
    }
    _insert(con, "_lw_entries", pa.table(entries), _INSERT_ENTRIES, params)
    rejects = _columns(window, events, settled.refused) | {
        "available_balance": pa.array(settled.available_before),
    }
    _insert(con, "_lw_refused", pa.table(rejects), _INSERT_REJECTS, params)


def _insert(
    con: duckdb.DuckDBPyConnection, name: str, table: pa.Table, sql: str, params: dict
) -> None:
    con.register(name, table)
    run_sql(con, sql, params)
    con.unregister(name)


def _columns(window: Window, events: dict[str, np.ndarray], rows: np.ndarray) -> dict:
    """The text and times of these events' entries, taken from their lots and requests."""
    lot, request = events["lot"][rows], events["request"][rows]
    lot = np.where(lot >= 0, at(window.line_order, lot), -1)

    def taken(table: pa.Table, index: np.ndarray, name: str) -> pa.Array:
        column = table.column(name).combine_chunks()
        if len(column) == 0:
            return pa.nulls(len(index), column.type)
        values = column.take(pa.array(np.maximum(index, 0)))
        return pc.if_else(pa.array(index >= 0), values, pa.nulls(len(index), column.type))

    return (
        {
            "kind": pa.array(events["kind"][rows]),
            "customer_id": window.customer_ids.take(pa.array(events["cust"][rows])),
            "occurred_at": pa.array(events["at"][rows], pa.timestamp("us")),
            "lot_event_at": taken(window.lots, lot, "event_at"),
            "request_event_at": taken(window.requests, request, "event_at"),
        }
        | {name: taken(window.lots, lot, name) for name in _LOT_COLUMNS}
        | {name: taken(window.requests, request, name) for name in _REQUEST_COLUMNS}
    )
