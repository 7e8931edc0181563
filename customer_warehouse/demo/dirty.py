"""Dirty rows: extra raw rows with exactly one defect each, and where they go in the file.

``dirty_rate * orders`` extra order rows, spread evenly over the reasons in
``params.DIRTY_ORDER_REASONS``, each row with exactly one defect, and ``dirty_rate * customers``
extra customer rows (``params.DIRTY_CUSTOMER_REASONS``). ``truth/dirty_orders.csv`` and
``truth/dirty_customers.csv`` list every raw row that staging must reject (or, for
``unknown_customer``, keep with a flag), with its 1-based data row number in the file (header not
counted; it is the loader's ``_source_row``); rows whose id is empty are identified by that row
number. An exact duplicate lists only the copy; a conflicting duplicate lists the original and
the copy, because both are rejected. Conflicting duplicates are made from cancelled/refunded
orders (and from prospects for customers), so rejecting the original does not remove a purchase:
the truth of the clean rows stays exact (only if a run has no such order is a completed order
used, which then removes one real purchase from what the warehouse can see).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from customer_warehouse.demo.params import (
    CUSTOMER_COLUMNS,
    DIRTY_CUSTOMER_REASONS,
    DIRTY_ORDER_REASONS,
    ORDER_COLUMNS,
    ORDER_ID_BASE,
)
from customer_warehouse.demo.simulation import Customers, Orders
from customer_warehouse.demo.tables import empty_table, orders_table
from customer_warehouse.demo.text import digits, format_money

_Part = tuple[pa.Table, np.ndarray, list[str]]  # extra rows, where they go, their reasons


@dataclass
class _DirtyPlan:
    rows: pa.Table  # the extra rows, in file order
    insert_before: np.ndarray  # index of the clean row each extra row is written before
    truth: list[tuple[str, str, int]]  # (id, expected_reason, row_number)


def _row_numbers(insert_before: np.ndarray, clean_rows: np.ndarray) -> np.ndarray:
    """1-based row numbers of clean rows once the extra rows are inserted."""
    return clean_rows + np.searchsorted(insert_before, clean_rows, side="right") + 1


def _finish_plan(
    parts: list[_Part],
    originals: list[tuple[str, str, int]],
    columns: Sequence[str],
    id_column: str,
) -> _DirtyPlan:
    """Sort the extra rows by position and compute every listed row's number."""
    if not parts:
        return _DirtyPlan(empty_table(columns), np.empty(0, np.int64), [])
    table = pa.concat_tables([part[0] for part in parts])
    before = np.concatenate([part[1] for part in parts]).astype(np.int64)
    reasons = [reason for part in parts for reason in part[2]]
    order = np.argsort(before, kind="stable")
    table = table.take(pa.array(order))
    before = before[order]
    ids = table.column(id_column).to_pylist()
    truth = [(ids[j] or "", reasons[order[j]], int(before[j]) + j + 1) for j in range(len(order))]
    if originals:
        clean = np.array([row for _id, _reason, row in originals], dtype=np.int64)
        numbers = _row_numbers(before, clean)
        truth += [
            (oid, reason, int(number))
            for (oid, reason, _r), number in zip(originals, numbers, strict=True)
        ]
    truth.sort(key=lambda row: row[2])
    return _DirtyPlan(table, before, truth)


def _replace(table: pa.Table, column: str, values: Any) -> pa.Table:
    index = table.schema.get_field_index(column)
    if not isinstance(values, pa.Array):
        values = pa.array(values, pa.string())
    return table.set_column(index, column, values)


def _per_reason(dirty_rate: float, n: int, reasons: Sequence[str]) -> int:
    """Extra rows per reason: ``dirty_rate`` of the clean rows spread over the reasons."""
    return 0 if dirty_rate <= 0 or n == 0 else max(1, round(dirty_rate * n / len(reasons)))


def _shortly_after(rng: np.random.Generator, source: np.ndarray, n: int) -> np.ndarray:
    """Where copies of rows ``source`` go: 1-200 rows later, at the latest at the end."""
    return np.minimum(source + 1 + rng.integers(0, 200, len(source)), n)


def _conflicting_originals(ids: list[str], rows: np.ndarray) -> list[tuple[str, str, int]]:
    """The originals of conflicting duplicates: they are rejected too."""
    return [(rid, "conflicting_duplicate", int(row)) for rid, row in zip(ids, rows, strict=True)]


def plan_dirty_orders(
    rng: np.random.Generator, orders: Orders, dirty_rate: float, n_customers: int
) -> _DirtyPlan:
    n = len(orders.id)
    per_reason = _per_reason(dirty_rate, n, DIRTY_ORDER_REASONS)
    if per_reason == 0:
        return _finish_plan([], [], ORDER_COLUMNS, "order_id")
    parts, originals = _duplicate_orders(rng, orders, per_reason)
    parts.append(_fresh_orders(rng, orders, per_reason, n_customers))
    return _finish_plan(parts, originals, ORDER_COLUMNS, "order_id")


def _duplicate_orders(
    rng: np.random.Generator, orders: Orders, per_reason: int
) -> tuple[list[_Part], list[tuple[str, str, int]]]:
    """Copies of orders: exact ones of completed orders (only the copy is rejected) and ones
    with the same id and another amount. Both rows of a conflict are rejected, so its original
    is taken from cancelled/refunded orders, which are not purchases."""
    n = len(orders.id)
    completed = np.flatnonzero(orders.status == 0)
    exact = rng.choice(completed, min(per_reason, len(completed)), replace=False)
    parts = [
        (
            orders_table(orders, exact),
            _shortly_after(rng, exact, n),
            ["exact_duplicate"] * len(exact),
        )
    ]
    pool = np.flatnonzero(orders.status != 0)
    if len(pool) < per_reason:  # tiny runs only: fall back to completed orders
        pool = np.setdiff1d(np.arange(n), exact)
    source = np.sort(rng.choice(pool, min(per_reason, len(pool)), replace=False))
    copies = orders_table(orders, source)
    copies = _replace(
        copies, "amount", format_money(orders.cents[source] + rng.integers(100, 5000, len(source)))
    )
    parts.append((copies, _shortly_after(rng, source, n), ["conflicting_duplicate"] * len(source)))
    original_ids = digits(orders.id[source], 9, "O").to_pylist()
    return parts, _conflicting_originals(original_ids, source)


def _fresh_orders(
    rng: np.random.Generator, orders: Orders, per_reason: int, n_customers: int
) -> _Part:
    """Rows with a fresh order id taken from the gaps of the id sequence, written where that id
    belongs in time, with one defect each."""
    free = np.flatnonzero(np.diff(orders.id, prepend=ORDER_ID_BASE) >= 2)
    fresh_reasons = [
        r for r in DIRTY_ORDER_REASONS if r not in ("exact_duplicate", "conflicting_duplicate")
    ]
    count = min(len(free), per_reason * len(fresh_reasons))
    position = rng.choice(free, count, replace=False)
    rows = orders_table(orders, position)
    rows = _replace(rows, "order_id", digits(orders.id[position] - 1, 9, "O"))
    # A new amount (same currency), so the row is not a near-copy of its neighbour.
    amount_cents = np.maximum(1, np.rint(orders.cents[position] * rng.uniform(0.5, 1.5, count)))
    rows = _replace(rows, "amount", format_money(amount_cents.astype(np.int64)))
    columns = {name: rows.column(name).to_pylist() for name in ORDER_COLUMNS}
    reasons = [fresh_reasons[k // per_reason] for k in range(count)]
    unknown_ids = n_customers + 1 + rng.choice(9_999_999 - n_customers, count, replace=False)
    for k, reason in enumerate(reasons):
        _spoil_order(rng, columns, k, reason, int(unknown_ids[k]))
    table = pa.table({name: pa.array(columns[name], pa.string()) for name in ORDER_COLUMNS})
    return table, position.copy(), reasons


def _spoil_order(
    rng: np.random.Generator, columns: dict[str, list[Any]], k: int, reason: str, unknown_id: int
) -> None:
    """Give row ``k`` of ``columns`` the defect ``reason``."""
    if reason == "missing_customer_id":
        columns["customer_id"][k] = None
    elif reason == "missing_order_id":
        columns["order_id"][k] = None
    elif reason == "unparseable_ordered_at":
        columns["ordered_at"][k] = "31/02/2024 25:00"
    elif reason == "missing_ordered_at":
        columns["ordered_at"][k] = None
    elif reason == "unparseable_amount":
        columns["amount"][k] = "12,5x"
    elif reason == "negative_amount":
        columns["amount"][k] = "-" + columns["amount"][k]
    elif reason == "absurd_amount":
        # Above the limit even after conversion from the cheapest currency (HKD 0.92).
        columns["amount"][k] = f"{int(rng.integers(2_000_000, 9_999_999))}.{k % 100:02d}"
    elif reason == "future_ordered_at":
        text = columns["ordered_at"][k].replace("-02-29T", "-02-28T")
        columns["ordered_at"][k] = "2099" + text[4:]
    elif reason == "unknown_status":
        columns["status"][k] = "lost"
    elif reason == "unknown_currency":
        columns["currency"][k] = "XYZ"
    elif reason == "unknown_customer":
        columns["customer_id"][k] = f"C{unknown_id:07d}"


def plan_dirty_customers(
    rng: np.random.Generator, table: pa.Table, customers: Customers, dirty_rate: float
) -> _DirtyPlan:
    n = table.num_rows
    per_reason = _per_reason(dirty_rate, n, DIRTY_CUSTOMER_REASONS)
    if per_reason == 0:
        return _finish_plan([], [], CUSTOMER_COLUMNS, "customer_id")
    parts: list[_Part] = []
    # Prospects (rows in customer-number order) are the originals of conflicting duplicates, so
    # rejecting both rows never hides a customer who has orders.
    row_is_prospect = ~customers.is_buyer[np.argsort(customers.number)]
    prospects = np.flatnonzero(row_is_prospect)
    buyers = np.flatnonzero(~row_is_prospect)
    k = min(per_reason, len(prospects))
    conflicting = np.sort(rng.choice(prospects, k, replace=False))
    rest = np.setdiff1d(np.arange(n), conflicting)
    exact = np.sort(rng.choice(rest, min(per_reason, len(rest)), replace=False))
    template = rng.choice(buyers if len(buyers) else np.arange(n), per_reason)

    parts.append(
        (
            table.take(pa.array(exact)),
            _shortly_after(rng, exact, n),
            ["exact_duplicate"] * len(exact),
        )
    )
    copies = table.take(pa.array(conflicting))
    copies = _replace(
        copies,
        "email",
        [f"updated.{row}@example.com" for row in conflicting.tolist()],
    )
    parts.append((copies, _shortly_after(rng, conflicting, n), ["conflicting_duplicate"] * k))
    ids = table.column("customer_id").take(pa.array(conflicting)).to_pylist()
    originals = _conflicting_originals(ids, conflicting)
    missing = table.take(pa.array(template))
    missing = _replace(missing, "customer_id", pa.nulls(per_reason, pa.string()))
    missing = _replace(missing, "email", [f"guest.{j}@example.com" for j in range(per_reason)])
    parts.append(
        (missing, rng.integers(0, n + 1, per_reason), ["missing_customer_id"] * per_reason)
    )
    return _finish_plan(parts, originals, CUSTOMER_COLUMNS, "customer_id")


def with_inserted(
    clean: pa.Table, clean_index: np.ndarray, plan: _DirtyPlan, lo: int, hi: int, last: bool
) -> pa.Table:
    """Merge the extra rows that belong before clean rows ``lo..hi-1`` (and at the end)."""
    left = np.searchsorted(plan.insert_before, lo, side="left")
    right = np.searchsorted(plan.insert_before, hi, side="right" if last else "left")
    if left == right:
        return clean
    extra = plan.rows.slice(left, right - left)
    keys = np.concatenate([clean_index.astype(np.float64), plan.insert_before[left:right] - 0.5])
    order = np.argsort(keys, kind="stable")
    return pa.concat_tables([clean.cast(extra.schema), extra]).take(pa.array(order))
