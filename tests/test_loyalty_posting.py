"""Loyalty points: the rules read from the seeds, and the posting run as a whole (defaults,
failures, explained inputs, the full rebuild)."""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pytest

from customer_warehouse import loyalty
from customer_warehouse.loyalty import load_rules, post_ledger, rebuild_ledger
from customer_warehouse.loyalty import settle as settlement

from .loyalty_helpers import random_customer
from .loyalty_reference import CustomerEvents, compute_ledger
from .loyalty_warehouse import LEDGER_ORDER, load_seeds, make_warehouse, read_results

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
        doubled = dataclasses.replace(rules, base_points_per_currency_unit=Decimal(2))
        rebuild_ledger(con, as_of, doubled)
        assert read_outputs(con) != once
        results = read_results(con)
        for events in generated:
            if events.customer_id in results:
                assert results[events.customer_id] == compute_ledger(events, doubled, as_of)
