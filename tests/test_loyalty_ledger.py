"""The loyalty ledger across runs: append-only, keyed by events, a past that stays put.

A refund arriving in a later run posts a dated clawback and leaves every earlier entry
byte-identical; a rerun adds nothing; runs in any order, repeated, give the ledger of one full
recompute; the balance on a past date is reproducible from the ledger; pending points, points
expiring soon, manual adjustments and the daily liability; and, through dbt, a later refund does
not change the level (so the points) of an order placed before it.
"""

from __future__ import annotations

import dataclasses
import random
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pytest

from customer_warehouse import loyalty
from customer_warehouse.loyalty import LoyaltyRules, load_rules, post_ledger, rebuild_ledger

from .conftest import build_warehouse
from .loyalty_reference import Adjustment, CustomerEvents, Order, Redemption, compute_ledger
from .loyalty_warehouse import make_warehouse, read_results
from .test_loyalty import random_customer

MULTIPLIERS = {"ordinary": 1, "silver": 1.25, "gold": 1.5, "platinum": 2}
RULES = LoyaltyRules(
    base_points_per_currency_unit=Decimal(1),
    birthday_month_multiplier=Decimal(2),
    points_expiry_months=12,
    level_multipliers=MULTIPLIERS,
    pending_days=14,
    expiring_soon_days=30,
    point_value=Decimal("0.01"),
)
WITHOUT_POSTING_RUN = "* exclude (posted_as_of)"


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def posted(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    """The append-only tables without the column that names the run (and the balances)."""
    return {
        table: con.execute(f"select {WITHOUT_POSTING_RUN} from {table} order by all").fetchall()
        for table in (loyalty.LEDGER_TABLE, loyalty.REJECTS_TABLE, loyalty.DAILY_TABLE)
    } | {
        "balances": con.execute(
            f"select * from {loyalty.BALANCES_TABLE} order by customer_id"
        ).fetchall()
    }


def entries(con: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    """Every ledger row, whole (every column), by movement_id."""
    relation = con.sql(f"select * from {loyalty.LEDGER_TABLE}")
    columns = relation.columns
    return {row[0]: dict(zip(columns, row, strict=True)) for row in relation.fetchall()}


def balance_on(con: duckdb.DuckDBPyConnection, customer_id: str, day: date) -> int:
    return con.execute(
        f"select coalesce(sum(points), 0) from {loyalty.LEDGER_TABLE} "
        "where customer_id = ? and occurred_at < ?",
        [customer_id, day + timedelta(days=1)],
    ).fetchone()[0]


def set_status(con, order_id: str, status: str, changed: str) -> None:
    con.execute(
        "update intermediate.int_orders_joined_to_membership_levels "
        "set status = ?, status_changed_at = ? where order_id = ?",
        [status, ts(changed), order_id],
    )


# --------------------------------------------------------------------------------------------
# A refund arriving later
# --------------------------------------------------------------------------------------------


def test_a_refund_arriving_later_posts_a_dated_clawback_and_changes_nothing_posted() -> None:
    customer = CustomerEvents(
        "C1",
        [
            Order("O1", ts("2025-03-01 10:00"), Decimal(100), "completed", "ordinary"),
            Order("O2", ts("2025-03-05 10:00"), Decimal(50), "completed", "gold"),
            Order("O3", ts("2025-03-06 10:00"), Decimal(40), "completed", "silver"),
        ],
    )
    with duckdb.connect() as con:
        make_warehouse(con, [customer])
        post_ledger(con, date(2025, 3, 10), RULES)
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
            Order("O1", ts("2025-03-01 10:00"), Decimal(100), "completed", "ordinary"),
            Order("O2", ts("2025-03-05 10:00"), Decimal(50), "completed", "ordinary"),
        ],
    )
    with duckdb.connect() as con:
        make_warehouse(con, [customer])
        post_ledger(con, date(2025, 3, 10), RULES)
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
# Pending, expiring soon, adjustments, month ends
# --------------------------------------------------------------------------------------------


def test_pending_points_become_available_after_the_return_window() -> None:
    customer = CustomerEvents(
        "C1",
        [
            Order("O1", ts("2025-03-01 10:00"), Decimal(100), "completed", "ordinary"),
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
            Redemption("R1", ts("2025-03-10 10:00"), 50),  # O1 is still pending: refused
            Redemption("R2", ts("2025-03-15 10:00"), 50),  # the moment O1 becomes available
        ],
    )
    with duckdb.connect() as con:
        make_warehouse(con, [customer])
        post_ledger(con, date(2025, 3, 10), RULES)
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
            Order("O1", ts("2024-07-20 10:00"), Decimal(20), "completed", "ordinary"),
            Order("O2", ts("2024-08-10 10:00"), Decimal(40), "completed", "ordinary"),
            Order("O3", ts("2025-01-10 10:00"), Decimal(80), "completed", "ordinary"),
        ],
    )
    with duckdb.connect() as con:
        make_warehouse(con, [customer])
        post_ledger(con, date(2025, 6, 30), rules)
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
        [Order("O1", ts("2025-01-10 10:00"), Decimal(100), "completed", "ordinary")],
        [Redemption("R1", ts("2025-02-01 10:00"), 250)],
        adjustments=[
            Adjustment("A1", ts("2025-01-20 10:00"), 200, "goodwill"),
            Adjustment("A2", ts("2025-03-01 10:00"), -80, "correction"),
            Adjustment("A3", ts("2025-03-02 10:00"), -500, "fraud_reversal"),
        ],
    )
    with duckdb.connect() as con:
        make_warehouse(con, [customer])
        post_ledger(con, date(2026, 3, 1), RULES)
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
            Order("O1", ts("2024-01-30 23:00"), Decimal(100), "completed", "ordinary"),
            Order("O2", ts("2024-01-31 10:00"), Decimal(100), "completed", "ordinary"),
        ],
        [Redemption("R1", ts("2024-02-01 10:00"), 150)],
    )
    with duckdb.connect() as con:
        make_warehouse(con, [customer])
        post_ledger(con, date(2024, 3, 31), rules)
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
            [
                CustomerEvents(
                    "C1", [Order("O1", ts("2025-01-01"), Decimal(10), "completed", "gold")]
                )
            ],
            as_of=date(2025, 1, 31),
        )
        post_ledger(con)
        rules = load_rules(con)
        row = con.execute(f"select points, available_at from {loyalty.LEDGER_TABLE}").fetchone()
    assert row == (15, ts("2025-01-01") + timedelta(days=rules.pending_days))
