"""Loyalty points: earning, one customer at a time, through the set-based ledger itself
(customer_warehouse.loyalty.rebuild_ledger on a small DuckDB file; ``run`` builds a warehouse and
posts it). Expiry and redemptions are in tests/test_loyalty_expiry_and_redemptions.py,
clawbacks in tests/test_loyalty_clawbacks.py, the invariants over random event streams in
tests/test_loyalty_invariants.py, the rules and the posting run in tests/test_loyalty_posting.py
and the append-only behaviour across runs in tests/test_loyalty_ledger.py.

These rule tests are the ones the former per-customer function had; only their call site
changed. Rule changes the append-only ledger brought are said where they apply: an earlier
as-of date after a later one no longer rebuilds the ledger (it posts nothing), and levels are
the ones known at the order (dbt model)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from customer_warehouse.loyalty import LoyaltyRules

from .loyalty_helpers import movements, order, run, ts
from .loyalty_reference import Order

# --------------------------------------------------------------------------------------------
# Earning
# --------------------------------------------------------------------------------------------


def test_base_earn_is_rounded_down_per_order() -> None:
    result = run([order("O1", "2025-03-01 10:00", "100.99"), order("O2", "2025-03-02", "0.99")])
    # O2 earns floor(0.99) = 0 points: no movement at all.
    assert movements(result) == [("earn", "2025-03-01 10:00:00", 100, 100)]
    row = result.ledger[0]
    assert row.movement_id == "earn:O1" and row.order_id == "O1" and row.note is None
    assert row.lot_expires_at == ts("2026-03-01 10:00")
    assert result.balance.points_balance == 100 == result.balance.points_earned_total


def test_earn_uses_exact_decimals_not_floats() -> None:
    # 0.29 * 100 is 28.999999999999996 in binary floating point.
    rules = LoyaltyRules(Decimal(100), Decimal(2), 12, {"ordinary": 1})
    result = run([Order("O1", ts("2025-01-05"), 0.29, "completed", "ordinary")], rules=rules)
    assert result.ledger[0].points == 29


@pytest.mark.parametrize(
    ("level", "amount", "expected"),
    [
        ("ordinary", "100", 100),
        ("silver", "10.40", 13),
        ("gold", "100", 150),
        ("GOLD ", "99.99", 149),  # level names are matched case- and space-insensitively
        ("platinum", "33.3", 66),
    ],
)
def test_level_multiplier_at_order_time(level: str, amount: str, expected: int) -> None:
    result = run([order("O1", "2025-05-01", amount, level=level)])
    assert result.ledger[0].points == expected
    assert result.ledger[0].membership_level_at_order == level


def test_unknown_level_earns_with_multiplier_one_and_says_so() -> None:
    result = run(
        [
            order("O1", "2025-05-01", "100", level="diamond"),
            order("O2", "2025-05-02", "10", level=None),
        ]
    )
    assert [r.points for r in result.ledger] == [100, 10]
    assert "'diamond' has no multiplier" in result.ledger[0].note
    assert "None has no multiplier" in result.ledger[1].note


def test_birthday_month_doubles_the_earn() -> None:
    result = run(
        [
            order("O1", "2025-04-30 23:59", "100", level="gold"),
            order("O2", "2025-05-01 00:00", "100", level="gold"),
            order("O3", "2025-05-31 23:59:59", "10.5"),
            order("O4", "2025-06-01 00:00", "100"),
        ],
        birth_month=5,
    )
    assert [(r.order_id, r.points, r.is_birthday_month) for r in result.ledger] == [
        ("O1", 150, False),
        ("O2", 300, True),
        ("O3", 21, True),
        ("O4", 100, False),
    ]


def test_no_birth_month_no_bonus() -> None:
    result = run([order("O1", "2025-05-10", "100")], birth_month=None)
    assert result.ledger[0].points == 100 and result.ledger[0].is_birthday_month is False


def test_orders_after_as_of_date_do_not_exist_yet() -> None:
    result = run(
        [order("O1", "2025-12-31 23:59:59", "10"), order("O2", "2026-01-01 00:00", "20")],
        as_of=date(2025, 12, 31),
    )
    assert [r.order_id for r in result.ledger] == ["O1"]
    assert result.balance.as_of_date == date(2025, 12, 31)


def test_contract_violations_raise_with_the_order_named() -> None:
    with pytest.raises(ValueError, match="'O1' has status 'pending'"):
        run([order("O1", "2025-01-01", "10", status="pending")])
    with pytest.raises(ValueError, match="'O2' has amount"):
        run([Order("O2", ts("2025-01-01"), None, "completed", "gold")])
    with pytest.raises(ValueError, match="'O3' has amount"):
        run([order("O3", "2025-01-01", "-5")])
    with pytest.raises(ValueError, match="'O4' .* appears twice"):
        run([order("O4", "2025-01-01", "5"), order("O4", "2025-01-02", "5")])
