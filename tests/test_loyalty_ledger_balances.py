"""The loyalty ledger's balances: pending points become available after the return window,
points expiring soon use the window of the rules, manual adjustments add lots and take at most
the available balance, and month-end clamps that reorder expiries are exact."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import duckdb
import pytest

from customer_warehouse import loyalty
from customer_warehouse.loyalty import LoyaltyRules, post_ledger, rebuild_ledger

from .loyalty_helpers import order, redeem, ts
from .loyalty_ledger_helpers import MULTIPLIERS, RULES, posted_once
from .loyalty_reference import Adjustment, CustomerEvents, Order, compute_ledger
from .loyalty_warehouse import make_warehouse, read_results

# --------------------------------------------------------------------------------------------
# Pending, expiring soon, adjustments, month ends
# --------------------------------------------------------------------------------------------


def test_pending_points_become_available_after_the_return_window() -> None:
    customer = CustomerEvents(
        "C1",
        [
            order("O1", "2025-03-01 10:00", 100),
            Order(
                "O2",
                ts("2025-03-02 10:00"),
                Decimal(30),
                "refunded",
                "ordinary",
                ts("2025-03-04 10:00"),
            ),
        ],
        [
            redeem("R1", "2025-03-10 10:00", 50),  # O1 is still pending: refused
            redeem("R2", "2025-03-15 10:00", 50),  # the moment O1 becomes available
        ],
    )
    with posted_once(customer, date(2025, 3, 10)) as con:
        balance = con.execute(
            f"select points_balance, points_available, points_pending from {loyalty.BALANCES_TABLE}"
        ).fetchone()
        assert balance == (100, 0, 100)
        reject = con.execute(
            f"select redemption_id, reject_reason, available_balance from {loyalty.REJECTS_TABLE}"
        ).fetchall()
        assert reject == [("R1", "insufficient_balance", 0)]  # pending points are not available
        post_ledger(con, date(2025, 3, 20), RULES)
        rows = con.execute(
            f"select movement_id, occurred_at, points, available_at from {loyalty.LEDGER_TABLE} "
            "order by movement_seq"
        ).fetchall()
        assert rows == [
            ("earn:O1", ts("2025-03-01 10:00"), 100, ts("2025-03-15 10:00")),
            ("earn:O2", ts("2025-03-02 10:00"), 30, ts("2025-03-16 10:00")),
            ("clawback:O2", ts("2025-03-04 10:00"), -30, None),  # its own pending lot, whole
            ("redeem:R2", ts("2025-03-15 10:00"), -50, None),
        ]
        assert con.execute(
            f"select points_balance, points_available, points_pending from {loyalty.BALANCES_TABLE}"
        ).fetchone() == (50, 50, 0)
        pending = dict(
            con.execute(
                f"select day, points_pending from {loyalty.DAILY_TABLE} "
                "where day between '2025-03-01' and '2025-03-16'"
            ).fetchall()
        )
        assert pending[date(2025, 3, 1)] == 100
        assert pending[date(2025, 3, 2)] == pending[date(2025, 3, 3)] == 130
        assert pending[date(2025, 3, 4)] == pending[date(2025, 3, 14)] == 100
        assert pending[date(2025, 3, 15)] == pending[date(2025, 3, 16)] == 0
    assert read_via_reference(customer, date(2025, 3, 20))


def read_via_reference(customer: CustomerEvents, as_of: date) -> bool:
    """The same customer through the per-customer reference gives the same ledger."""
    with duckdb.connect() as con:
        make_warehouse(con, [customer])
        rebuild_ledger(con, as_of, RULES)
        return read_results(con)[customer.customer_id] == compute_ledger(customer, RULES, as_of)


@pytest.mark.parametrize(("window", "expected"), [(30, 20), (45, 20 + 40)])
def test_points_expiring_soon_use_the_window_of_the_rules(window: int, expected: int) -> None:
    rules = LoyaltyRules(
        Decimal(1), Decimal(2), 12, MULTIPLIERS, pending_days=0, expiring_soon_days=window
    )
    customer = CustomerEvents(
        "C1",
        [
            order("O1", "2024-07-20 10:00", 20),
            order("O2", "2024-08-10 10:00", 40),
            order("O3", "2025-01-10 10:00", 80),
        ],
    )
    with posted_once(customer, date(2025, 6, 30), rules) as con:
        soon, until, next_expiry = con.execute(
            f"select points_expiring_soon, expiring_soon_until, next_expiry_date "
            f"from {loyalty.BALANCES_TABLE}"
        ).fetchone()
    assert soon == expected
    assert until == date(2025, 6, 30) + timedelta(days=window)
    assert next_expiry == date(2025, 7, 20)


def test_manual_adjustments_add_lots_and_take_at_most_the_available_balance() -> None:
    customer = CustomerEvents(
        "C1",
        [order("O1", "2025-01-10 10:00", 100)],
        [redeem("R1", "2025-02-01 10:00", 250)],
        adjustments=[
            Adjustment("A1", ts("2025-01-20 10:00"), 200, "goodwill"),
            Adjustment("A2", ts("2025-03-01 10:00"), -80, "correction"),
            Adjustment("A3", ts("2025-03-02 10:00"), -500, "fraud_reversal"),
        ],
    )
    with posted_once(customer, date(2026, 3, 1)) as con:
        rows = con.execute(
            f"""
            select movement_id, points, points_shortfall, adjustment_reason, lot_expires_at, note
            from {loyalty.LEDGER_TABLE} order by movement_seq
            """
        ).fetchall()
    assert rows == [
        ("earn:O1", 100, None, None, ts("2026-01-24 10:00"), None),
        ("adjust:A1", 200, None, "goodwill", ts("2026-01-20 10:00"), None),  # a lot, at once
        ("redeem:R1", -250, None, None, None, None),  # A1's 200 first (available earlier)
        (
            "adjust:A2",
            -50,
            30,
            "correction",
            None,
            "adjustment of -80 points: 30 could not be taken (the available balance did not "
            "cover them)",
        ),
        (
            "adjust:A3",
            0,
            500,
            "fraud_reversal",
            None,
            "adjustment of -500 points: 500 could not be taken (the available balance did not "
            "cover them)",
        ),
    ]
    assert read_via_reference(customer, date(2026, 3, 1))


def test_month_end_clamps_that_reorder_expiries_are_exact() -> None:
    """Jan 30 23:00 and Jan 31 10:00 both expire on the last day of February (day clamped,
    time kept), so the lot that became available later expires first: each lot loses only
    what is left of itself."""
    rules = LoyaltyRules(Decimal(1), Decimal(2), 1, MULTIPLIERS)
    customer = CustomerEvents(
        "C1",
        [
            order("O1", "2024-01-30 23:00", 100),
            order("O2", "2024-01-31 10:00", 100),
        ],
        [redeem("R1", "2024-02-01 10:00", 150)],
    )
    with posted_once(customer, date(2024, 3, 31), rules) as con:
        rows = con.execute(
            f"select movement_id, occurred_at, points from {loyalty.LEDGER_TABLE} "
            "order by movement_seq"
        ).fetchall()
    assert rows == [
        ("earn:O1", ts("2024-01-30 23:00"), 100),
        ("earn:O2", ts("2024-01-31 10:00"), 100),
        ("redeem:R1", ts("2024-02-01 10:00"), -150),  # all of O1, 50 of O2 (oldest first)
        ("expire:O2", ts("2024-02-29 10:00"), -50),  # O1 (expiring at 23:00) is empty
    ]
    assert compute_ledger(customer, rules, date(2024, 3, 31)).ledger[3].points == -50
