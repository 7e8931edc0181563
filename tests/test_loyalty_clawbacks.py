"""Loyalty points: clawbacks of refunded and cancelled orders, and the order of movements at the
same timestamp, one customer at a time, through the set-based ledger
(tests/loyalty_helpers.py ``run``)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from .loyalty_helpers import movements, order, redeem, run, ts
from .loyalty_reference import Order

# --------------------------------------------------------------------------------------------
# Clawbacks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["refunded", "cancelled"])
def test_refund_or_cancellation_takes_back_exactly_the_points_earned(status: str) -> None:
    result = run(
        [
            order("O1", "2025-01-01", "80"),
            order("O2", "2025-03-01", "200", status=status, level="gold", changed="2025-03-06"),
        ],
        birth_month=3,
    )
    assert movements(result) == [
        ("earn", "2025-01-01 00:00:00", 80, 80),
        ("earn", "2025-03-01 00:00:00", 600, 680),
        ("clawback", "2025-03-06 00:00:00", -600, 80),
    ]
    claw = result.ledger[2]
    assert claw.movement_id == "clawback:O2" and claw.points_shortfall == 0 and claw.note is None
    assert claw.membership_level_at_order == "gold"
    assert result.balance.points_clawed_back_total == 600


def test_clawback_after_the_points_were_spent_never_goes_negative() -> None:
    result = run(
        [
            order("O1", "2025-01-01", "100"),
            order("O2", "2025-02-01", "50", status="refunded", changed="2025-04-01"),
        ],
        [redeem("R1", "2025-03-01", 140)],
    )
    # R1 took O1's 100 and 40 of O2 (FIFO); the clawback takes the 10 left and notes 40 unpaid.
    assert movements(result) == [
        ("earn", "2025-01-01 00:00:00", 100, 100),
        ("earn", "2025-02-01 00:00:00", 50, 150),
        ("redeem", "2025-03-01 00:00:00", -140, 10),
        ("clawback", "2025-04-01 00:00:00", -10, 0),
    ]
    claw = result.ledger[-1]
    assert claw.points_shortfall == 40
    assert "40 could not be taken back (0 had already expired, 40 had been spent" in claw.note


def test_clawback_of_spent_points_takes_them_from_other_lots() -> None:
    result = run(
        [
            order("O1", "2025-01-01", "100"),
            order("O2", "2025-02-01", "50", status="refunded", changed="2025-05-01"),
            order("O3", "2025-04-01", "70"),
        ],
        [redeem("R1", "2025-03-01", 140)],
    )
    # O2's lot has 10 left; the 40 spent come from O3 → balance 70 - 30 = 30... all taken.
    claw = result.ledger[-1]
    assert (claw.movement_type, claw.points, claw.points_shortfall) == ("clawback", -50, 0)
    assert result.balance.points_balance == 30
    # O3's lot lost 40, so only 30 are left to expire.
    later = run(
        [
            order("O1", "2025-01-01", "100"),
            order("O2", "2025-02-01", "50", status="refunded", changed="2025-05-01"),
            order("O3", "2025-04-01", "70"),
        ],
        [redeem("R1", "2025-03-01", 140)],
        as_of=date(2026, 12, 31),
    )
    assert [(r.movement_id, r.points) for r in later.ledger if r.movement_type == "expire"] == [
        ("expire:O3", -30)
    ]


def test_clawback_takes_the_orders_own_lot_first() -> None:
    result = run(
        [
            order("O1", "2025-01-01", "100"),
            order("O2", "2025-02-01", "50", status="cancelled", changed="2025-02-10"),
        ],
        as_of=date(2026, 12, 31),
    )
    # O1's lot is untouched by O2's clawback and expires whole.
    assert [(r.movement_id, r.points) for r in result.ledger] == [
        ("earn:O1", 100),
        ("earn:O2", 50),
        ("clawback:O2", -50),
        ("expire:O1", -100),
    ]


def test_clawback_after_expiry_does_not_take_the_points_twice() -> None:
    result = run(
        [
            order("O1", "2024-01-01", "100", status="refunded", changed="2025-02-01"),
            order("O2", "2024-12-01", "30"),
        ],
    )
    claw = next(r for r in result.ledger if r.movement_type == "clawback")
    assert (claw.points, claw.points_shortfall) == (0, 100)
    assert "100 had already expired, 0 had been spent" in claw.note
    assert result.balance.points_balance == 0  # O2 expired 2025-12-01, untouched by clawback
    assert result.balance.points_expired_total == 130


def test_clawback_after_the_as_of_date_is_not_known_yet() -> None:
    orders = [order("O1", "2025-12-20", "100", status="refunded", changed="2026-01-02")]
    assert [r.movement_type for r in run(orders).ledger] == ["earn"]
    assert [r.movement_type for r in run(orders, as_of=date(2026, 1, 2)).ledger] == [
        "earn",
        "clawback",
    ]


def test_clawback_without_or_with_impossible_status_time_is_dated_at_the_order() -> None:
    result = run(
        [
            order("O1", "2025-01-01 10:00", "10", status="cancelled", changed=None),
            order("O2", "2025-01-02 10:00", "20", status="cancelled", changed="2025-01-01"),
        ]
    )
    assert movements(result) == [
        ("earn", "2025-01-01 10:00:00", 10, 10),
        ("clawback", "2025-01-01 10:00:00", -10, 0),
        ("earn", "2025-01-02 10:00:00", 20, 20),
        ("clawback", "2025-01-02 10:00:00", -20, 0),
    ]
    assert result.ledger[1].note == "status_changed_at missing: clawback dated at ordered_at"
    assert result.ledger[3].note.startswith("status_changed_at before ordered_at")


def test_completed_order_with_a_status_time_is_not_clawed_back() -> None:
    result = run([order("O1", "2025-01-01", "10", changed="2025-01-03")])
    assert [r.movement_type for r in result.ledger] == ["earn"]


# --------------------------------------------------------------------------------------------
# Same-timestamp ordering
# --------------------------------------------------------------------------------------------


def test_same_timestamp_order_is_expire_earn_redeem_clawback() -> None:
    t = "2025-03-01 12:00"
    result = run(
        [
            order("A-old", "2024-03-01 12:00", "30"),  # expires exactly at t
            order("B", t, "100", status="refunded", changed=t),
            order("A", t, "5"),
        ],
        [redeem("R2", t, 50), redeem("R1", t, 40)],
    )
    assert [(r.movement_id, r.points, r.balance_after) for r in result.ledger] == [
        ("earn:A-old", 30, 30),
        ("expire:A-old", -30, 0),  # expired points are gone before anything else at t
        ("earn:A", 5, 5),  # earns by order_id
        ("earn:B", 100, 105),
        ("redeem:R1", -40, 65),  # redemptions by redemption_id, before the clawback
        ("redeem:R2", -50, 15),
        ("clawback:B", -15, 0),  # what is left; 85 spent at the same instant
    ]
    assert result.ledger[-1].points_shortfall == 85


def test_input_order_does_not_matter() -> None:
    orders = [
        order("O1", "2025-01-01", "10"),
        order("O2", "2025-01-01", "20", status="refunded", changed="2025-01-05"),
        order("O3", "2024-01-05", "7"),
    ]
    redemptions = [redeem("R1", "2025-01-05", 15), redeem("R0", "2025-01-05", 3)]
    first = run(orders, redemptions)
    assert first == run(orders[::-1], redemptions[::-1])


def test_aware_timestamps_are_converted_to_utc() -> None:
    aware = Order("O1", ts("2025-06-01 01:00+08:00"), Decimal(10), "completed", "ordinary")
    result = run([aware], birth_month=5)
    assert result.ledger[0].occurred_at == ts("2025-05-31 17:00")
    assert result.ledger[0].is_birthday_month is True  # the UTC month is May
