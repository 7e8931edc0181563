"""Helpers of the loyalty tests (tests/test_loyalty_*.py): the rules, one customer's events
posted by the set-based ledger in one run, and random event streams."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import numpy as np

from customer_warehouse.loyalty import LoyaltyRules

from .loyalty_reference import (
    Adjustment,
    BalanceRow,
    CustomerEvents,
    LedgerResult,
    Order,
    Redemption,
)
from .loyalty_warehouse import NO_BIRTH_ROW, run_engine

RULES = LoyaltyRules(
    base_points_per_currency_unit=Decimal(1),
    birthday_month_multiplier=Decimal(2),
    points_expiry_months=12,
    level_multipliers={"ordinary": 1.0, "silver": 1.25, "gold": 1.5, "platinum": 2.0},
)
AS_OF = date(2025, 12, 31)


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def order(
    order_id: str,
    at: str,
    amount: str | float,
    status: str = "completed",
    level: str | None = "ordinary",
    changed: str | None = None,
) -> Order:
    return Order(order_id, ts(at), Decimal(str(amount)), status, level, changed and ts(changed))


def redeem(redemption_id: str, at: str, points: int | None) -> Redemption:
    return Redemption(redemption_id, ts(at), points)


def run(
    orders=(), redemptions=(), birth_month=None, as_of=AS_OF, rules=RULES, customer_id="C1"
) -> LedgerResult:
    """One customer's ledger, refusals and balance, posted by the set-based ledger in one run."""
    events = CustomerEvents(customer_id, list(orders), list(redemptions), birth_month)
    aware = any(o.ordered_at.tzinfo for o in events.orders)
    results = run_engine([events], rules, as_of, aware=aware)
    empty = BalanceRow(customer_id, 0, 0, 0, 0, 0, 0, None, None, as_of)
    return results.get(customer_id, LedgerResult([], [], empty))


def movements(result: LedgerResult) -> list[tuple[str, str, int, int]]:
    return [(r.movement_type, str(r.occurred_at), r.points, r.balance_after) for r in result.ledger]


LEVELS = ["ordinary", "silver", "gold", "platinum", "diamond", None]


def random_customer(
    rng: np.random.Generator, customer_id: str, adjustments: bool = False
) -> CustomerEvents:
    """Events on a coarse time grid so that equal timestamps are frequent; about one in four
    at a random second of the day, so month-end clamps reorder expiries (Jan 30 23:00 and
    Jan 31 10:00 both expire on Feb 28, the later one first)."""
    start = datetime(2022, 1, 1)

    def moment() -> datetime:
        at = start + timedelta(hours=12 * int(rng.integers(0, 2 * 365 * 4)))
        if rng.random() < 0.25:
            at = at.replace(hour=0) + timedelta(seconds=int(rng.integers(0, 86_400)))
        return at

    orders = []
    for index in range(int(rng.integers(0, 14))):
        ordered_at = moment()
        status = str(rng.choice(["completed", "completed", "cancelled", "refunded"]))
        changed = None
        if rng.random() < 0.9:
            changed = ordered_at + timedelta(hours=12 * int(rng.integers(-2, 900)))
        amount = Decimal(int(rng.integers(0, 60_000))) / 100
        level = LEVELS[int(rng.integers(0, len(LEVELS)))]
        orders.append(Order(f"{customer_id}-O{index}", ordered_at, amount, status, level, changed))
    redemptions = [
        Redemption(f"{customer_id}-R{index}", moment(), int(rng.integers(-5, 700)))
        for index in range(int(rng.integers(0, 10)))
    ]
    extra = []
    if adjustments:
        extra = [
            Adjustment(f"{customer_id}-A{index}", moment(), int(rng.integers(-300, 300)) or 1)
            for index in range(int(rng.integers(0, 4)))
        ]
    birth_month = None if rng.random() < 0.2 else int(rng.integers(1, 13))
    if customer_id.endswith(NO_BIRTH_ROW):  # the warehouse gets no birth-month row for them
        birth_month = None
    return CustomerEvents(customer_id, orders, redemptions, birth_month, extra)
