"""Loyalty points: the ledger's invariants over random event streams, and the set-based ledger's
equality with the per-customer reference (tests/loyalty_reference.py)."""

from __future__ import annotations

import random
from datetime import date, datetime
from decimal import Decimal

import numpy as np
import pytest

from customer_warehouse.loyalty import MOVEMENT_RANK, LoyaltyRules

from .loyalty_helpers import RULES, random_customer
from .loyalty_reference import CustomerEvents, compute_ledger
from .loyalty_warehouse import run_engine

# --------------------------------------------------------------------------------------------
# Invariants over random event streams, and equality with the per-customer reference
# --------------------------------------------------------------------------------------------


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
