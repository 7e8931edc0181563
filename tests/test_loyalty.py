"""Loyalty points: every rule of the ledger, one customer at a time, through the set-based
ledger itself (customer_warehouse.loyalty.rebuild_ledger on a small DuckDB file), its
invariants over random event streams and its equality with the per-customer reference
(tests/loyalty_reference.py), the rules read from the seeds, and the posting run as a whole
(defaults, failures, explained inputs). The append-only behaviour across runs is in
tests/test_loyalty_ledger.py.

These rule tests are the ones the former per-customer function had; only their call site
changed (``run`` builds a warehouse and posts it). Rule changes the append-only ledger brought
are said where they apply: an earlier as-of date after a later one no longer rebuilds the
ledger (it posts nothing), and levels are the ones known at the order (dbt model)."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pytest

from customer_warehouse import loyalty
from customer_warehouse.loyalty import (
    MOVEMENT_RANK,
    LoyaltyRules,
    load_rules,
    post_ledger,
    rebuild_ledger,
)
from customer_warehouse.loyalty import settle as settlement

from .loyalty_reference import (
    Adjustment,
    BalanceRow,
    CustomerEvents,
    LedgerResult,
    Order,
    Redemption,
    compute_ledger,
)
from .loyalty_warehouse import (
    LEDGER_ORDER,
    NO_BIRTH_ROW,
    load_seeds,
    make_warehouse,
    read_results,
    run_engine,
)

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


# --------------------------------------------------------------------------------------------
# Invariants over random event streams, and equality with the per-customer reference
# --------------------------------------------------------------------------------------------

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


def valid_points_at(lots: list[tuple[datetime, datetime | None, int]], moment: datetime) -> int:
    return sum(
        p
        for earned, expires, p in lots
        if earned <= moment and (expires is None or moment < expires)
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_invariants_over_random_event_streams(seed: int) -> None:
    rng = np.random.default_rng(seed)
    as_of = date(2025, 6, 30)
    as_of_end = datetime(2025, 7, 1)
    rules = (
        RULES if seed != 3 else LoyaltyRules(Decimal("0.5"), Decimal(3), 6, RULES.level_multipliers)
    )
    generated = [random_customer(rng, f"C{number:04d}") for number in range(150)]
    results = run_engine(generated, rules, as_of)
    shuffled_results = run_engine(
        [
            CustomerEvents(
                events.customer_id,
                random.Random(seed).sample(list(events.orders), len(events.orders)),
                random.Random(seed).sample(list(events.redemptions), len(events.redemptions)),
                events.birth_month,
            )
            for events in reversed(generated)
        ],
        rules,
        as_of,
    )
    assert shuffled_results == results  # the input order does not matter
    for events in generated:
        # The set-based ledger is the per-customer reference, row for row.
        reference = compute_ledger(events, rules, as_of)
        if events.customer_id not in results:
            assert reference.ledger == [] and reference.rejected_redemptions == []
            continue
        result = results[events.customer_id]
        assert result == reference
        _assert_balance_adds_up(result)
        _assert_ordered_with_stable_ids(result.ledger, as_of_end)
        _assert_expired_points_never_available(result.ledger)
        _assert_clawbacks_within_earned(result.ledger)
        _assert_every_redemption_counted_once(events, result, as_of_end)


def _assert_balance_adds_up(result) -> None:
    """Balance = sum of ledger movements, and the running balance is never negative."""
    ledger, balance = result.ledger, result.balance
    running = 0
    for row in ledger:
        running += row.points
        assert row.balance_after == running >= 0
    assert balance.points_balance == running == sum(r.points for r in ledger)
    assert balance.points_balance == (
        balance.points_earned_total
        - balance.points_redeemed_total
        - balance.points_expired_total
        - balance.points_clawed_back_total
    )


def _assert_ordered_with_stable_ids(ledger, as_of_end: datetime) -> None:
    """Deterministic, in time order, stable unique ids, nothing after the as-of date."""
    keys = [(r.occurred_at, MOVEMENT_RANK[r.movement_type]) for r in ledger]
    assert keys == sorted(keys)
    assert all(r.occurred_at < as_of_end for r in ledger)
    assert [r.movement_seq for r in ledger] == list(range(1, len(ledger) + 1))
    assert len({r.movement_id for r in ledger}) == len(ledger)


def _assert_expired_points_never_available(ledger) -> None:
    """At every redemption, and at the end of every instant, the balance is covered by lots
    that are still valid at that moment."""
    earns = [r for r in ledger if r.movement_type == "earn"]
    lots = [(r.occurred_at, r.lot_expires_at, r.points) for r in earns]
    for row, following in zip(ledger, [*ledger[1:], None], strict=False):
        if row.movement_type == "redeem" or (
            following is None or following.occurred_at != row.occurred_at
        ):
            assert row.balance_after <= valid_points_at(lots, row.occurred_at)


def _assert_clawbacks_within_earned(ledger) -> None:
    """A clawback never takes more than its order earned; taken + shortfall = earned."""
    earned = {r.order_id: r.points for r in ledger if r.movement_type == "earn"}
    for row in ledger:
        if row.movement_type == "clawback":
            assert -row.points + row.points_shortfall == earned[row.order_id]


def _assert_every_redemption_counted_once(events, result, as_of_end: datetime) -> None:
    """Every redemption up to the as-of date is either in the ledger or rejected, once; a
    redemption is never clamped."""
    ledger = result.ledger
    counted = [r.redemption_id for r in ledger if r.movement_type == "redeem"]
    counted += [r.redemption_id for r in result.rejected_redemptions]
    expected = [r.redemption_id for r in events.redemptions if r.redeemed_at < as_of_end]
    assert sorted(counted) == sorted(expected)
    for reject in result.rejected_redemptions:
        assert reject.available_balance >= 0
        if reject.reject_reason == "insufficient_balance":
            assert reject.points > reject.available_balance
    for row in ledger:
        if row.movement_type == "redeem":
            requested = next(
                r.points for r in events.redemptions if r.redemption_id == row.redemption_id
            )
            assert row.points == -requested  # never clamped


@pytest.mark.parametrize(
    "rules",
    [
        LoyaltyRules(Decimal(1), Decimal(2), 12, RULES.level_multipliers, pending_days=14),
        LoyaltyRules(Decimal("0.5"), Decimal(3), 6, RULES.level_multipliers, pending_days=30),
        LoyaltyRules(Decimal(1), Decimal(2), 0, RULES.level_multipliers, pending_days=7),
    ],
    ids=["pending-14d", "pending-30d-6-months", "never-expire"],
)
def test_set_based_ledger_equals_the_per_customer_reference(rules: LoyaltyRules) -> None:
    """With pending points and manual adjustments too, on 400 generated customers: the
    set-based ledger (one pass of SQL and numpy for all) gives exactly the rows of the
    per-customer state machine, customer by customer."""
    rng = np.random.default_rng(rules.pending_days)
    generated = [random_customer(rng, f"C{n:04d}", adjustments=True) for n in range(400)]
    as_of = date(2025, 6, 30)
    results = run_engine(generated, rules, as_of)
    compared = 0
    kinds: set[str] = set()
    for events in generated:
        reference = compute_ledger(events, rules, as_of)
        if events.customer_id not in results:
            assert reference.ledger == [] and reference.rejected_redemptions == []
            continue
        assert results[events.customer_id] == reference, events.customer_id
        kinds |= {r.movement_type for r in reference.ledger}
        compared += 1
    assert compared > 350
    assert kinds == {"earn", "redeem", "clawback", "expire", "adjust"} - (
        {"expire"} if rules.points_expiry_months == 0 else set()
    )


# --------------------------------------------------------------------------------------------
# Rules from the seeds
# --------------------------------------------------------------------------------------------


def test_load_rules_reads_the_seed_files(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        load_seeds(con)
        rules = load_rules(con)
    assert rules.base_points_per_currency_unit == 1
    assert rules.birthday_month_multiplier == 2
    assert rules.points_expiry_months == 12
    assert (rules.pending_days, rules.expiring_soon_days) == (14, 30)
    assert rules.point_value == Decimal("0.01")
    assert rules.level_multipliers == {
        "ordinary": Decimal("1.0"),
        "silver": Decimal("1.25"),
        "gold": Decimal("1.5"),
        "platinum": Decimal("2.0"),
    }


def test_load_rules_explains_missing_seeds_and_rules(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        with pytest.raises(LookupError, match=r"seeds.loyalty_rules.*dbt seed"):
            load_rules(con)
        load_seeds(con)
        con.execute("delete from seeds.loyalty_rules where rule = 'points_expiry_months'")
        with pytest.raises(ValueError, match="lacks the rule\\(s\\) points_expiry_months"):
            load_rules(con)
        load_seeds(con)
        con.execute(
            "update seeds.loyalty_level_multipliers set multiplier = -1 "
            "where membership_level = 'gold'"
        )
        with pytest.raises(ValueError, match="level 'gold' is negative"):
            load_rules(con)
        load_seeds(con)
        con.execute("update seeds.loyalty_rules set value = 400 where rule = 'pending_days'")
        with pytest.raises(ValueError, match="pending_days \\(400\\) must be shorter"):
            load_rules(con)


# --------------------------------------------------------------------------------------------
# The posting run as a whole
# --------------------------------------------------------------------------------------------


def generated_warehouse(path: Path, customers: int = 120, seed: int = 7) -> list[CustomerEvents]:
    """A DuckDB file with the seeds and the upstream tables, as of 2025-06-30."""
    rng = np.random.default_rng(seed)
    generated = [random_customer(rng, f"C{n:04d}", adjustments=True) for n in range(customers)]
    with duckdb.connect(str(path)) as con:
        make_warehouse(con, generated, as_of=date(2025, 6, 30))
    return generated


def read_outputs(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    return {
        table: con.execute(f"select * from {table} order by all").fetchall()
        for table in (
            loyalty.LEDGER_TABLE,
            loyalty.BALANCES_TABLE,
            loyalty.REJECTS_TABLE,
            loyalty.DAILY_TABLE,
        )
    }


def test_the_posted_tables_hold_the_reference_and_their_invariants(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    generated = generated_warehouse(path)
    as_of = date(2025, 6, 30)
    with duckdb.connect(str(path)) as con:
        rules = load_rules(con)  # the seeds: 14 pending days, 0.01 per point
        report = post_ledger(con)  # as of intermediate.int_as_of_date
        assert report.as_of_date == as_of
        results = read_results(con)
        assert report.entries_posted == len(
            con.execute(f"select * from {loyalty.LEDGER_TABLE} {LEDGER_ORDER}").fetchall()
        )
        assert report.balances == len(results) > 100
        assert {"earn", "redeem", "clawback", "expire", "adjust"} <= set(report.movement_counts)
        for events in generated:
            if events.customer_id in results:
                assert results[events.customer_id] == compute_ledger(events, rules, as_of)

        # Table-level invariants, in SQL as a BI reader would check them.
        assert con.execute(
            f"""
            select count(*) from {loyalty.BALANCES_TABLE} as b
            left join (
                select customer_id, sum(points) as total
                from {loyalty.LEDGER_TABLE} group by customer_id
            ) as l using (customer_id)
            where b.points_balance <> coalesce(l.total, 0)
                or b.points_balance <> b.points_available + b.points_pending
            """
        ).fetchone() == (0,)
        assert con.execute(
            f"select count(*) from {loyalty.LEDGER_TABLE} where balance_after < 0"
        ).fetchone() == (0,)
        assert con.execute(
            f"select count(*) = count(distinct movement_id) from {loyalty.LEDGER_TABLE}"
        ).fetchone() == (True,)
        assert con.execute(
            f"select max(occurred_at) < timestamp '2025-07-01' from {loyalty.LEDGER_TABLE}"
        ).fetchone() == (True,)


def test_a_failure_leaves_every_table_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "w.duckdb"
    generated_warehouse(path, customers=60)
    with duckdb.connect(str(path)) as con:
        post_ledger(con, date(2024, 6, 30))
        before = read_outputs(con)

        def failing(*_args, **_kwargs):
            raise RuntimeError("boom while settling")

        monkeypatch.setattr(settlement, "settle", failing)
        with pytest.raises(RuntimeError, match="boom"):
            post_ledger(con, date(2025, 6, 30))
        assert read_outputs(con) == before
        leftovers = con.execute(
            "select table_name from information_schema.tables where table_name like '\\_lw\\_%' "
            "escape '\\'"
        ).fetchall()
        assert leftovers == []


class FailOnStatement:
    """A connection proxy that raises on the first statement containing ``needle``."""

    def __init__(self, con: duckdb.DuckDBPyConnection, needle: str) -> None:
        self._con, self._needle = con, needle

    def execute(self, query: str, *args):
        if self._needle in query:
            raise duckdb.IOException(f"simulated failure on: {query[:80]}")
        return self._con.execute(query, *args)

    def __getattr__(self, name: str):
        return getattr(self._con, name)


def test_a_failure_in_the_last_write_rolls_the_whole_posting_back(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    generated_warehouse(path, customers=30)
    with duckdb.connect(str(path)) as con:
        post_ledger(con, date(2024, 1, 31))
        before = read_outputs(con)
        # The entries and refusals are written when the balances table fails.
        proxy = FailOnStatement(con, f"create or replace table {loyalty.BALANCES_TABLE}")
        with pytest.raises(duckdb.IOException, match="simulated"):
            post_ledger(proxy, date(2025, 6, 30))
        assert read_outputs(con) == before
        assert loyalty.read_horizon(con) == date(2024, 1, 31)


def test_missing_upstream_tables_and_duplicate_orders_are_explained(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        load_seeds(con)
        with pytest.raises(LookupError, match="int_orders_joined_to_membership_levels.*dbt"):
            post_ledger(con, date(2025, 6, 30))
    path.unlink()
    generated_warehouse(path, customers=10)
    with duckdb.connect(str(path)) as con:
        con.execute(
            "insert into intermediate.int_orders_joined_to_membership_levels "
            "select * from intermediate.int_orders_joined_to_membership_levels limit 1"
        )
        with pytest.raises(ValueError, match="appears twice"):
            post_ledger(con, date(2025, 6, 30))


def test_rebuild_is_the_full_recompute_and_rewrites_the_past(tmp_path: Path) -> None:
    """rebuild_ledger drops the posted tables and posts one window up to the date: the path
    for a new installation or a rule change that must reach history (never the daily run)."""
    path = tmp_path / "w.duckdb"
    generated = generated_warehouse(path, customers=40)
    as_of = date(2025, 6, 30)
    with duckdb.connect(str(path)) as con:
        post_ledger(con, as_of)
        once = read_outputs(con)
        report = rebuild_ledger(con, as_of)
        assert report.window_start is None and report.days_posted > 365
        assert read_outputs(con) == once
        rules = load_rules(con)
        doubled = LoyaltyRules(
            base_points_per_currency_unit=Decimal(2),
            birthday_month_multiplier=rules.birthday_month_multiplier,
            points_expiry_months=rules.points_expiry_months,
            level_multipliers=rules.level_multipliers,
            pending_days=rules.pending_days,
            expiring_soon_days=rules.expiring_soon_days,
            point_value=rules.point_value,
        )
        rebuild_ledger(con, as_of, doubled)
        assert read_outputs(con) != once
        results = read_results(con)
        for events in generated:
            if events.customer_id in results:
                assert results[events.customer_id] == compute_ledger(events, doubled, as_of)
