"""The window in memory: its lots in line order, its requests and customers (Arrow for the
text, numpy for the numbers), and every event of the window in ledger order.

Reads the temporary tables ``_lw_lots``, ``_lw_requests`` and ``_lw_customers`` and the
posted ledger (each customer's balance and last ``movement_seq``); writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa

from customer_warehouse.loyalty.duck import arrow
from customer_warehouse.loyalty.schema import (
    ADJUST,
    AVAIL,
    CLAW,
    EARN,
    EARN_LOT,
    EXPIRE,
    LEDGER_TABLE,
    NEVER,
    REDEEM,
    REDEEM_REQUEST,
)


@dataclass
class Window:
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


_LOTS = f"""
    select
        rowid as row_id,
        *,
        epoch_us(lot_at) as lot_at_us,
        epoch_us(available_at) as available_at_us,
        coalesce(epoch_us(lot_expires_at), {NEVER}) as expires_at_us,
        coalesce(epoch_us(claw_at), {NEVER}) as claw_at_us,
        coalesce(claw_rank, 0) as claw_order
    from _lw_lots
"""
_LINE_ORDER = (
    "select rowid as row_id from _lw_lots order by cust_no, available_at, lot_at, lot_kind, lot_ref"
)
# Per customer: the posted balance and last movement_seq, the line's end and available end.
_CUSTOMERS = f"""
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
"""
_LOT_NUMBERS = {
    "cust": "cust_no",
    "kind": "lot_kind",
    "points": "points",
    "lot_at": "lot_at_us",
    "available_at": "available_at_us",
    "expires_at": "expires_at_us",
    "claw_at": "claw_at_us",
    "claw_rank": "claw_order",
}
_LOT_FLAGS = ("is_new", "expired_before", "clamped")


def load_window(con: duckdb.DuckDBPyConnection, params: dict) -> Window:
    """Fetch the lots once; their numbers are put in line order (a narrow sort in DuckDB), their
    text stays where it is and is taken only for the entries written."""
    lots = arrow(con, _LOTS, {})
    row_ids = numbers(lots.column("row_id"))
    base = int(row_ids.min()) if len(row_ids) else 0
    if not np.array_equal(row_ids - base, np.arange(len(row_ids))):
        raise RuntimeError("_lw_lots was not read in row order")
    line_order = numbers(arrow(con, _LINE_ORDER, {}).column("row_id")) - base
    lot_number = np.empty(len(line_order), dtype=np.int64)
    lot_number[line_order] = np.arange(len(line_order))
    requests = arrow(con, "select *, epoch_us(booked_at) as booked_at_us from _lw_requests", {})
    customers = arrow(con, _CUSTOMERS, params)
    return Window(
        lots=lots,
        line_order=line_order,
        requests=requests,
        customer_ids=customers.column("customer_id").combine_chunks(),
        lot=_lot_arrays(lots, line_order),
        request=_request_arrays(requests, lot_number, base),
        b0=numbers(customers.column("b0")),
        seq0=numbers(customers.column("seq0")),
        t0=numbers(customers.column("t0")),
        tav0=numbers(customers.column("tav0")),
    )


def _lot_arrays(lots: pa.Table, line_order: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {name: numbers(lots.column(column)) for name, column in _LOT_NUMBERS.items()}
    arrays |= {name: flags(lots.column(name)) for name in _LOT_FLAGS}
    arrays["expired_points"] = numbers(lots.column("expired_points"))
    return {name: values[line_order] for name, values in arrays.items()}


def _request_arrays(requests: pa.Table, lot_number: np.ndarray, base: int) -> dict[str, np.ndarray]:
    request_lots = numbers(requests.column("lot_rowid"), missing=-1)
    return {
        "cust": numbers(requests.column("cust_no")),
        "kind": numbers(requests.column("request_kind")),
        "booked_at": numbers(requests.column("booked_at_us")),
        "amount": numbers(requests.column("amount")),
        "valid": flags(requests.column("invalid_reason").is_null()),
        "lot": np.where(request_lots >= 0, at(lot_number, request_lots - base), -1),
    }


def numbers(column: pa.ChunkedArray | pa.Array, missing: int = 0) -> np.ndarray:
    """An integer (or timestamp-as-micros) column as int64, nulls as ``missing``."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        column = column.fill_null(missing)
    return column.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def flags(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean column as numpy, nulls as False."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)


def at(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[index]`` where index >= 0 (elsewhere a placeholder, masked by the caller)."""
    if len(values) == 0:
        return np.zeros(len(index), dtype=values.dtype)
    return values[np.maximum(index, 0)]


def order_events(window: Window, params: dict) -> dict[str, np.ndarray]:
    """Every event of the window in ledger order: (customer, time, kind, then lot or id).

    Each stream is already in that order (lots expire and become available in line order;
    clawbacks and requests are sorted here), so a stable sort on one int64 key — customer,
    second, kind — merges them; events in the same second keep their stream's order, which is
    right when timestamps are whole seconds (else a full lexicographic sort is used).
    """
    lot, request = window.lot, window.request
    streams = _lot_streams(lot, *(_epoch_micros(params[name]) for name in ("start", "end")))
    n_lots = sum(len(index) for index, _time, _kind in streams)
    n = n_lots + len(request["cust"])
    cust = np.empty(n, dtype=np.int64)
    moment = np.empty(n, dtype=np.int64)
    kind = np.empty(n, dtype=np.int8)
    lots_of = np.full(n, -1, dtype=np.int64)
    offset = 0
    for index, time_column, event_kind in streams:
        stop = offset + len(index)
        cust[offset:stop] = lot["cust"][index]
        moment[offset:stop] = lot[time_column][index]
        kind[offset:stop] = event_kind
        lots_of[offset:stop] = index
        offset = stop
    cust[n_lots:] = request["cust"]
    moment[n_lots:] = request["booked_at"]
    kind[n_lots:] = np.where(request["kind"] == REDEEM_REQUEST, REDEEM, ADJUST)
    lots_of[n_lots:] = request["lot"]
    requests = np.full(n, -1, dtype=np.int64)
    requests[n_lots:] = np.arange(len(request["cust"]))
    order = _ledger_order(cust, moment, kind)
    return {
        "cust": cust[order],
        "at": moment[order],
        "kind": kind[order],
        "lot": lots_of[order],
        "request": requests[order],
    }


def _lot_streams(lot: dict[str, np.ndarray], start: int, end: int) -> tuple:
    """The lots' events, each stream in ledger order: (lot numbers, time column, kind)."""
    earn = np.flatnonzero(lot["is_new"] & (lot["kind"] == EARN_LOT))
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
    claws = np.flatnonzero(lot["claw_at"] != NEVER)
    claws = claws[np.lexsort((lot["claw_rank"][claws], lot["claw_at"][claws], lot["cust"][claws]))]
    return (
        (earn, "lot_at", EARN),
        (avail, "available_at", AVAIL),
        (expire, "expires_at", EXPIRE),
        (claws, "claw_at", CLAW),
    )


def _epoch_micros(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1)) // timedelta(microseconds=1)


def _ledger_order(cust: np.ndarray, moment: np.ndarray, kind: np.ndarray) -> np.ndarray:
    if len(cust) == 0:
        return np.zeros(0, dtype=np.int64)
    seconds, fraction = np.divmod(moment, 1_000_000)
    low = int(seconds.min())
    span = int(seconds.max()) - low + 1
    if not fraction.any() and (int(cust.max()) + 1) * span * 8 < 2**63:
        seconds -= low
        seconds *= 8
        seconds += kind
        seconds += cust * (span * 8)
        return np.argsort(seconds, kind="stable")
    return np.lexsort((np.arange(len(cust)), kind, moment, cust))
