"""The loyalty ledger across runs: append-only, keyed by events, a past that stays put.

A refund arriving in a later run posts a dated clawback and leaves every earlier entry
byte-identical; a rerun adds nothing; runs in any order, repeated, give the ledger of one full
recompute; the balance on a past date is reproducible from the ledger; the daily liability;
and, through dbt, a later refund does not change the level (so the points) of an order placed
before it. Pending points, points expiring soon, manual adjustments and month ends are in
tests/test_loyalty_ledger_balances.py."""

from __future__ import annotations

import dataclasses
import random
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pytest

from customer_warehouse import loyalty
from customer_warehouse.loyalty import load_rules, post_ledger, rebuild_ledger

from .conftest import build_warehouse
from .loyalty_helpers import order, random_customer, ts
from .loyalty_ledger_helpers import RULES, balance_on, entries, posted, posted_once, set_status
from .loyalty_reference import CustomerEvents
from .loyalty_warehouse import make_warehouse

# --------------------------------------------------------------------------------------------
# A refund arriving later
# --------------------------------------------------------------------------------------------


def test_a_refund_arriving_later_posts_a_dated_clawback_and_changes_nothing_posted() -> None:
    customer = CustomerEvents(
        "C1",
        [
            order("O1", "2025-03-01 10:00", 100),
            order("O2", "2025-03-05 10:00", 50, level="gold"),
            order("O3", "2025-03-06 10:00", 40, level="silver"),
        ],
    )
    with posted_once(customer, date(2025, 3, 10)) as con:
        first = entries(con)
        assert sorted(first) == ["earn:O1", "earn:O2", "earn:O3"]
        assert balance_on(con, "C1", date(2025, 3, 10)) == 100 + 75 + 50

        # O1 is refunded on 2025-03-15, after the first run: known in the second one.
        set_status(con, "O1", "refunded", "2025-03-15 09:00")
        report = post_ledger(con, date(2025, 3, 20), RULES)
        second = entries(con)
        assert {key: second[key] for key in first} == first  # byte-identical, every column
        claw = second["clawback:O1"]
        assert (claw["occurred_at"], claw["event_at"]) == (ts("2025-03-15 09:00"),) * 2
        assert (claw["points"], claw["points_shortfall"], claw["note"]) == (-100, 0, None)
        assert claw["posted_as_of"] == date(2025, 3, 20) and claw["movement_seq"] == 4
        assert report.entries_posted == 1 and report.late_entries == 0
        assert balance_on(con, "C1", date(2025, 3, 10)) == 225  # the past did not move
        assert balance_on(con, "C1", date(2025, 3, 20)) == 125

        # O2's refund happened on 2025-03-08 but reaches the warehouse only now: it is booked
        # at the start of the first open day, with the moment it happened and a note.
        set_status(con, "O2", "refunded", "2025-03-08 12:00")
        report = post_ledger(con, date(2025, 3, 21), RULES)
        third = entries(con)
        assert {key: third[key] for key in second} == second
        late = third["clawback:O2"]
        assert late["occurred_at"] == ts("2025-03-21 00:00")
        assert late["event_at"] == ts("2025-03-08 12:00")
        assert "posted late" in late["note"] and "after 2025-03-20" in late["note"]
        assert report.late_entries == 1
        for day in (date(2025, 3, 10), date(2025, 3, 20)):  # reported balances stay put
            assert balance_on(con, "C1", day) == {10: 225, 20: 125}[day.day]
        assert balance_on(con, "C1", date(2025, 3, 21)) == 50


def test_an_order_corrected_after_its_earn_was_posted_earns_once() -> None:
    """A later export moves an earned order into the next window with another amount (a
    correction): its earn stays as posted, no second `earn:<order>` (found by the serving test's
    growing shop, whose regenerated orders moved)."""
    customer = CustomerEvents(
        "C1",
        [
            order("O1", "2025-03-01 10:00", 100),
            order("O2", "2025-03-05 10:00", 50),
        ],
    )
    with posted_once(customer, date(2025, 3, 10)) as con:
        first = entries(con)
        con.execute(
            "update intermediate.int_orders_joined_to_membership_levels "
            "set ordered_at = ?, amount = 80 where order_id = 'O2'",
            [ts("2025-03-15 10:00")],
        )
        report = post_ledger(con, date(2025, 3, 20), RULES)
        second = entries(con)
        assert second == first and report.entries_posted == 0
        assert con.execute(
            f"select count(*), count(distinct movement_id) from {loyalty.LEDGER_TABLE}"
        ).fetchone() == (2, 2)


def test_a_rerun_of_a_posted_day_adds_nothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    generated = [random_customer(rng, f"C{n:04d}", adjustments=True) for n in range(80)]
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        make_warehouse(con, generated)
        first = post_ledger(con, date(2025, 6, 30), RULES)
        assert first.entries_posted > 500 and first.days_posted > 365
        before = {
            table: con.execute(f"select * from {table} order by all").fetchall()
            for table in (loyalty.LEDGER_TABLE, loyalty.REJECTS_TABLE, loyalty.DAILY_TABLE)
        }
        again = post_ledger(con, date(2025, 6, 30), RULES)
        assert (again.entries_posted, again.rejects_posted, again.days_posted) == (0, 0, 0)
        assert again.window_start is None and again.balances == first.balances
        for table, rows in before.items():
            assert con.execute(f"select * from {table} order by all").fetchall() == rows


# --------------------------------------------------------------------------------------------
# Any order of runs: the ledger of one recompute
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated() -> list[CustomerEvents]:
    rng = np.random.default_rng(2025)
    return [random_customer(rng, f"C{n:04d}", adjustments=True) for n in range(150)]


def recomputed(customers: list[CustomerEvents], as_of: date) -> dict[str, list[tuple]]:
    with duckdb.connect() as con:
        make_warehouse(con, customers)
        rebuild_ledger(con, as_of, RULES)
        return posted(con)


FINAL = date(2025, 6, 30)


def as_of_runs(seed: int) -> dict[str, list[date]]:
    rng = random.Random(seed)
    some = sorted({date(2022, 1, 1) + timedelta(days=rng.randrange(1276)) for _ in range(12)})
    daily = [FINAL - timedelta(days=n) for n in range(30, -1, -1)]
    return {
        "increasing": [*some, FINAL],
        "shuffled and repeated": rng.sample(some, len(some)) + some[:4] + [FINAL, FINAL],
        "daily for a month": [*some[:3], *daily],
        "latest first": [FINAL, *reversed(some)],
    }


@pytest.mark.parametrize("name", list(as_of_runs(7)))
def test_runs_in_any_order_or_repeated_post_the_ledger_of_one_recompute(generated, name):
    """Every sequence of as-of dates ending at the same date posts exactly the rows of one full
    recompute (all but posted_as_of, which records the run), as long as no event is late: an
    earlier date after a later one posts nothing, a repeated date adds nothing."""
    runs = as_of_runs(7)[name]
    with duckdb.connect() as con:
        make_warehouse(con, generated)
        for as_of in runs:
            post_ledger(con, as_of, RULES)
        post_ledger(con, FINAL, RULES)
        got = posted(con)
        horizon = loyalty.read_horizon(con)
    assert horizon == max(runs)
    assert got == recomputed(generated, FINAL)


def test_the_balance_on_any_past_date_is_reproducible(generated) -> None:
    """After a chain of runs, the balance of every customer on a past day is the sum of the
    ledger's entries up to its end, it is the balance a recompute as of that day gives, the
    daily table holds its total, and a run as of that day reports it (posting nothing)."""
    days = [date(2023, 2, 28), date(2024, 2, 29), date(2024, 12, 31), date(2025, 5, 1)]
    with duckdb.connect() as con:
        make_warehouse(con, generated)
        for as_of in (date(2023, 6, 30), date(2024, 6, 30), date(2025, 1, 31), FINAL):
            post_ledger(con, as_of, RULES)
        ledger_before = entries(con)
        for day in days:
            from_ledger = dict(
                con.execute(
                    f"select customer_id, sum(points) from {loyalty.LEDGER_TABLE} "
                    "where occurred_at < ? group by all",
                    [day + timedelta(days=1)],
                ).fetchall()
            )
            outstanding = con.execute(
                f"select points_outstanding from {loyalty.DAILY_TABLE} where day = ?", [day]
            ).fetchone()[0]
            assert outstanding == sum(from_ledger.values())
            report = post_ledger(con, day, RULES)  # earlier than the horizon: nothing posted
            assert report.entries_posted == 0 and report.window_start is None
            reported = con.execute(
                f"select * from {loyalty.BALANCES_TABLE} order by customer_id"
            ).fetchall()
            assert {row[0]: row[1] for row in reported if row[1]} == {
                customer: points for customer, points in from_ledger.items() if points
            }
            assert reported == recomputed(generated, day)["balances"]
        assert entries(con) == ledger_before


# --------------------------------------------------------------------------------------------
# The daily liability
# --------------------------------------------------------------------------------------------


def test_the_daily_liability_is_the_ledger_per_day_times_the_point_value(generated) -> None:
    with duckdb.connect() as con:
        make_warehouse(con, generated)
        post_ledger(con, date(2024, 12, 31), RULES)
        dearer = dataclasses.replace(RULES, point_value=Decimal("0.02"))
        post_ledger(con, FINAL, dearer)
        days = con.execute(
            f"""
            select day, points_outstanding, points_pending, points_available, points_earned,
                points_redeemed, points_expired, points_clawed_back, points_adjusted,
                point_value, liability_amount, posted_as_of
            from {loyalty.DAILY_TABLE} order by day
            """
        ).fetchall()
        first_entry = con.execute(
            f"select min(occurred_at)::date from {loyalty.LEDGER_TABLE}"
        ).fetchone()[0]
        flows = dict(
            con.execute(
                f"select occurred_at::date, sum(points) from {loyalty.LEDGER_TABLE} group by 1"
            ).fetchall()
        )
    assert [row[0] for row in days] == [
        first_entry + timedelta(days=n) for n in range((FINAL - first_entry).days + 1)
    ]  # one row per day, no gap, up to the last as-of date
    outstanding = 0
    for row in days:
        day, total, pending, available, earned, redeemed, expired, clawed, adjusted = row[:9]
        value, money, run = row[9:]
        outstanding += flows.get(day, 0)
        assert total == outstanding == pending + available
        assert flows.get(day, 0) == earned - redeemed - expired - clawed + adjusted
        assert 0 <= pending <= total
        # The value per point is the one of the run that posted the day: the past stays put.
        assert (run, value) == (
            (date(2024, 12, 31), Decimal("0.01"))
            if day <= date(2024, 12, 31)
            else (FINAL, Decimal("0.02"))
        )
        assert money == (Decimal(total) * value).quantize(Decimal("0.01"))
    assert any(row[2] for row in days)  # pending points on some days (14 pending days)


# --------------------------------------------------------------------------------------------
# Through dbt: the level of an order is the one known at the order
# --------------------------------------------------------------------------------------------

ORDERS_BEFORE = """order_id,customer_id,ordered_at,amount,status,status_changed_at
o1,c1,2025-01-05 10:00:00,100.00,completed,
o2,c1,2025-01-06 10:00:00,100.00,completed,
o3,c1,2025-01-07 10:00:00,100.00,completed,
o4,c1,2025-01-08 10:00:00,100.00,completed,
o5,c1,2025-01-09 10:00:00,100.00,completed,
"""
# o2 is refunded on 2025-01-20: after o5 was placed (and its points posted).
ORDERS_AFTER = ORDERS_BEFORE.replace(
    "o2,c1,2025-01-06 10:00:00,100.00,completed,",
    "o2,c1,2025-01-06 10:00:00,100.00,refunded,2025-01-20 10:00:00",
)
LOYALTY_UPSTREAM = (
    "+int_orders_joined_to_membership_levels +int_customer_birth_months "
    "+stg_shop__redemptions +stg_shop__point_adjustments "
    "+int_customers_evaluated_for_membership_levels loyalty_rules loyalty_level_multipliers"
)


@pytest.mark.slow
def test_a_later_refund_does_not_change_the_points_of_an_earlier_order(tmp_path: Path) -> None:
    """Two real dbt builds into one warehouse. o5 was placed at silver (o1-o4: 400 CNY over
    four orders, seeds/tiers/membership_levels.csv); o2 is refunded after o5. The second build,
    as of a later date, still gives o5 silver (statuses as of the run date would have dropped
    o2 and made it ordinary), so its earn entry stays exactly as posted and o2's clawback is a
    new entry dated at the refund."""
    raw = tmp_path / "raw"
    raw.mkdir()
    work = tmp_path / "work"
    (raw / "orders.csv").write_text(ORDERS_BEFORE)
    warehouse = build_warehouse(raw, work, select=LOYALTY_UPSTREAM, as_of_date="2025-01-10")
    with duckdb.connect(str(warehouse.path)) as con:
        post_ledger(con)
        first = entries(con)
    assert first["earn:o5"]["membership_level_at_order"] == "silver"
    assert first["earn:o5"]["points"] == 125  # 100 × 1.25
    (raw / "orders.csv").write_text(ORDERS_AFTER)
    warehouse = build_warehouse(raw, work, select=LOYALTY_UPSTREAM, as_of_date="2025-01-25")
    with duckdb.connect(str(warehouse.path)) as con:
        level_now = con.execute(
            "select membership_level_at_order from "
            "intermediate.int_orders_joined_to_membership_levels where order_id = 'o5'"
        ).fetchone()[0]
        post_ledger(con)
        second = entries(con)
    assert level_now == "silver"  # recomputed as of 2025-01-25: what was known at the order
    assert {key: second[key] for key in first} == first
    assert (second["clawback:o2"]["occurred_at"], second["clawback:o2"]["points"]) == (
        ts("2025-01-20 10:00"),
        -100,
    )


def test_the_seeded_rules_are_what_the_posting_uses(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        make_warehouse(
            con,
            [CustomerEvents("C1", [order("O1", "2025-01-01", 10, level="gold")])],
            as_of=date(2025, 1, 31),
        )
        post_ledger(con)
        rules = load_rules(con)
        row = con.execute(f"select points, available_at from {loyalty.LEDGER_TABLE}").fetchone()
    assert row == (15, ts("2025-01-01") + timedelta(days=rules.pending_days))
