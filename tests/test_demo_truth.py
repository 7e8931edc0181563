"""Generated demo data with injected bad rows: staging finds exactly the rows the generator
planted, with the planted reason, and counts purchase occasions per distinct day."""

from __future__ import annotations

import pandas as pd
import pytest

from customer_warehouse import demo

from .conftest import STAGING_SELECTION, Warehouse, build_warehouse, staging_split_counts


@pytest.fixture(scope="module", params=["csv", "parquet"])
def dirty_warehouse(request, tmp_path_factory) -> Warehouse:
    work = tmp_path_factory.mktemp(f"dirty-{request.param}")
    raw = work / "raw"
    demo.generate(raw, customers=800, seed=7, dirty_rate=0.03, fmt=request.param, quiet=True)
    return build_warehouse(raw, work, select=STAGING_SELECTION)


def test_order_rejects_are_exactly_the_planted_rows(dirty_warehouse):
    truth = pd.read_csv(dirty_warehouse.raw_dir / "truth" / "dirty_orders.csv")
    planted = {
        (int(row.row_number), row.expected_reason)
        for row in truth.itertuples()
        if row.expected_reason != "unknown_customer"
    }
    assert len({reason for _, reason in planted}) >= 12  # every reason is exercised
    found = set(
        dirty_warehouse.query("select source_row, reject_reason from staging.order_rejects")
    )
    assert found == planted


def test_unknown_customers_are_kept_with_a_flag(dirty_warehouse):
    truth = pd.read_csv(dirty_warehouse.raw_dir / "truth" / "dirty_orders.csv")
    unknown_rows = {
        int(r) for r in truth.loc[truth.expected_reason == "unknown_customer", "row_number"]
    }
    assert unknown_rows
    flagged = {
        r[0]
        for r in dirty_warehouse.query(
            "select source_row from staging.stg_shop__orders where not has_customer_record"
        )
    }
    assert flagged == unknown_rows


def test_customer_rejects_are_exactly_the_planted_rows(dirty_warehouse):
    truth = pd.read_csv(dirty_warehouse.raw_dir / "truth" / "dirty_customers.csv")
    planted = {(int(row.row_number), row.expected_reason) for row in truth.itertuples()}
    found = set(
        dirty_warehouse.query("select source_row, reject_reason from staging.customer_rejects")
    )
    assert found == planted


def test_nothing_is_lost(dirty_warehouse):
    for source, raw, ok, bad, old in staging_split_counts(dirty_warehouse):
        assert raw > 0, source
        assert (raw, old) == (ok + bad, 0), source


def test_purchase_occasions_are_distinct_days(dirty_warehouse):
    truth = pd.read_parquet(dirty_warehouse.raw_dir / "truth" / "customers.parquet")
    buyers = truth.loc[~truth.is_prospect, ["customer_id", "repeat_purchase_days"]]
    counted = dict(
        dirty_warehouse.query(
            "select customer_id, count(distinct ordered_date) - 1 from staging.stg_shop__orders "
            "where is_purchase group by 1"
        )
    )
    # several same-day orders exist, so counting orders would overcount
    orders = dirty_warehouse.scalar(
        "select count(*) - count(distinct customer_id || cast(ordered_date as varchar)) "
        "from staging.stg_shop__orders where is_purchase"
    )
    assert orders > 0
    assert {c: counted[c] for c in buyers.customer_id} == dict(
        zip(buyers.customer_id, buyers.repeat_purchase_days.astype(int), strict=True)
    )
