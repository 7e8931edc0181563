"""Loyalty points: expiry of lots (oldest first) and redemptions, one customer at a time, through
the set-based ledger (tests/loyalty_helpers.py ``run``)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from customer_warehouse.loyalty import LoyaltyRules

from .loyalty_helpers import movements, order, redeem, run, ts
from .loyalty_reference import Redemption

# --------------------------------------------------------------------------------------------
# Expiry and FIFO
# --------------------------------------------------------------------------------------------


def test_each_lot_expires_after_the_configured_months() -> None:
    result = run([order("O1", "2024-01-10 10:00", "100"), order("O2", "2024-06-01", "50")])
    assert movements(result) == [
        ("earn", "2024-01-10 10:00:00", 100, 100),
        ("earn", "2024-06-01 00:00:00", 50, 150),
        ("expire", "2025-01-10 10:00:00", -100, 50),
        ("expire", "2025-06-01 00:00:00", -50, 0),
    ]
    assert result.ledger[2].movement_id == "expire:O1"
    assert result.balance.points_expired_total == 150


def test_expiry_clamps_to_month_end() -> None:
    result = run([order("O1", "2024-02-29 08:00", "10")], as_of=date(2024, 12, 31))
    assert result.ledger[0].lot_expires_at == ts("2025-02-28 08:00")
    rules = LoyaltyRules(Decimal(1), Decimal(2), 1, {"ordinary": 1})
    result = run([order("O1", "2025-01-31 08:00", "10")], rules=rules, as_of=date(2025, 1, 31))
    assert result.ledger[0].lot_expires_at == ts("2025-02-28 08:00")


def test_redemptions_consume_oldest_lot_first() -> None:
    result = run(
        [order("O1", "2023-01-10", "100"), order("O2", "2023-06-01", "50")],
        [redeem("R1", "2023-07-01", 120)],
        as_of=date(2024, 12, 31),
    )
    # FIFO: R1 takes all of O1 and 20 of O2, so O1 expires empty (no row) and O2 expires 30.
    assert movements(result) == [
        ("earn", "2023-01-10 00:00:00", 100, 100),
        ("earn", "2023-06-01 00:00:00", 50, 150),
        ("redeem", "2023-07-01 00:00:00", -120, 30),
        ("expire", "2024-06-01 00:00:00", -30, 0),
    ]
    assert result.ledger[2].movement_id == "redeem:R1" and result.ledger[2].redemption_id == "R1"


def test_expired_points_cannot_be_redeemed() -> None:
    orders = [order("O1", "2024-01-10 10:00", "100")]
    just_before = run(orders, [redeem("R1", "2025-01-10 09:59:59", 100)])
    assert [r.movement_type for r in just_before.ledger] == ["earn", "redeem"]
    assert just_before.rejected_redemptions == []

    at_expiry = run(orders, [redeem("R1", "2025-01-10 10:00", 100)])
    assert [r.movement_type for r in at_expiry.ledger] == ["earn", "expire"]
    (reject,) = at_expiry.rejected_redemptions
    assert (reject.reject_reason, reject.available_balance, reject.points) == (
        "insufficient_balance",
        0,
        100,
    )


def test_expiry_is_materialized_only_up_to_the_as_of_date() -> None:
    orders = [order("O1", "2024-01-10 10:00", "100")]
    before = run(orders, as_of=date(2025, 1, 9))
    assert [r.movement_type for r in before.ledger] == ["earn"]
    assert before.balance.points_expiring_next_30d == 100
    assert before.balance.next_expiry_date == date(2025, 1, 10)
    on_the_day = run(orders, as_of=date(2025, 1, 10))
    assert [r.movement_type for r in on_the_day.ledger] == ["earn", "expire"]
    assert on_the_day.balance.points_balance == 0
    assert on_the_day.balance.next_expiry_date is None


def test_points_expiring_next_30d_counts_only_lots_inside_the_window() -> None:
    result = run(
        [
            order("O1", "2025-01-15", "10"),  # expires 2026-01-15: inside
            order("O2", "2025-01-30 23:59", "20"),  # expires 2026-01-30 23:59: inside
            order("O3", "2025-01-31", "40"),  # expires 2026-01-31 00:00: outside
        ],
        [redeem("R1", "2025-02-01", 5)],  # taken from O1 (FIFO)
        as_of=date(2025, 12, 31),
    )
    assert result.balance.points_expiring_next_30d == 5 + 20
    assert result.balance.next_expiry_date == date(2026, 1, 15)


def test_zero_expiry_months_means_points_never_expire() -> None:
    rules = LoyaltyRules(Decimal(1), Decimal(2), 0, {"ordinary": 1})
    result = run([order("O1", "2015-01-01", "10")], rules=rules)
    assert [r.movement_type for r in result.ledger] == ["earn"]
    assert result.ledger[0].lot_expires_at is None
    assert result.balance.next_expiry_date is None and result.balance.points_expiring_next_30d == 0


# --------------------------------------------------------------------------------------------
# Redemptions
# --------------------------------------------------------------------------------------------


def test_over_redemption_is_rejected_not_clamped() -> None:
    result = run([order("O1", "2025-01-01", "100")], [redeem("R1", "2025-02-01", 101)])
    assert movements(result) == [("earn", "2025-01-01 00:00:00", 100, 100)]
    (reject,) = result.rejected_redemptions
    assert reject.redemption_id == "R1" and reject.customer_id == "C1"
    assert reject.redeemed_at == ts("2025-02-01")
    assert (reject.points, reject.reject_reason, reject.available_balance) == (
        101,
        "insufficient_balance",
        100,
    )
    assert result.balance.points_balance == 100 and result.balance.points_redeemed_total == 0


def test_a_rejected_redemption_does_not_block_later_ones() -> None:
    result = run(
        [order("O1", "2025-01-01", "100")],
        [
            redeem("R1", "2025-02-01", 500),
            redeem("R2", "2025-02-02", 60),
            redeem("R3", "2025-02-03", 41),
        ],
    )
    assert [r.movement_id for r in result.ledger] == ["earn:O1", "redeem:R2"]
    assert [(r.redemption_id, r.available_balance) for r in result.rejected_redemptions] == [
        ("R1", 100),
        ("R3", 40),
    ]


def test_invalid_and_duplicate_redemptions_are_rejected() -> None:
    result = run(
        [order("O1", "2025-01-01", "100")],
        [
            redeem("R0", "2025-02-01", 0),
            redeem("R1", "2025-02-01", -3),
            redeem("R2", "2025-02-01", None),
            Redemption("R3", ts("2025-02-01"), 2.5),
            redeem("R4", "2025-02-02", 10),
            redeem("R4", "2025-02-03", 10),
        ],
    )
    assert [(r.redemption_id, r.reject_reason) for r in result.rejected_redemptions] == [
        ("R0", "invalid_points"),
        ("R1", "invalid_points"),
        ("R2", "invalid_points"),
        ("R3", "invalid_points"),
        ("R4", "duplicate_redemption_id"),
    ]
    assert result.balance.points_balance == 90


def test_redemption_without_any_points() -> None:
    result = run([], [redeem("R1", "2025-02-01", 1)])
    assert result.ledger == []
    assert result.rejected_redemptions[0].available_balance == 0
    assert result.balance.points_balance == 0 and result.balance.last_movement_at is None
