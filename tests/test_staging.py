"""Staging: every bad row lands in a rejects table with the right reason, nothing is lost,
and good rows are standardized (UTC, currency, channel, status, region)."""

from __future__ import annotations

import csv
import shutil
from datetime import datetime
from decimal import Decimal

import pytest

from .conftest import (
    FIXTURES,
    STAGING_SELECTION,
    build_warehouse,
    dbt_env,
    run_dbt,
    staging_split_counts,
)


def _expected_reasons(source: str = "orders") -> dict[int, str]:
    with open(FIXTURES / "quarantine" / f"{source}.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {i + 1: row["expected_reason"] for i, row in enumerate(rows)}


def test_every_bad_order_row_has_its_reason(quarantine_warehouse):
    expected = {row: reason for row, reason in _expected_reasons().items() if reason}
    actual = dict(
        quarantine_warehouse.query("select source_row, reject_reason from staging.order_rejects")
    )
    assert actual == expected


def test_every_bad_point_adjustment_row_has_its_reason(quarantine_warehouse):
    """Manual adjustments: an id, a customer, a time, whole non-zero points within the var and a
    reason code from seeds/point_adjustment_reasons.csv, else a queryable reject."""
    expected = {
        row: reason for row, reason in _expected_reasons("point_adjustments").items() if reason
    }
    actual = dict(
        quarantine_warehouse.query(
            "select source_row, reject_reason from staging.point_adjustment_rejects"
        )
    )
    assert actual == expected
    accepted = quarantine_warehouse.query(
        "select adjustment_id, customer_id, points, reason, adjusted_at "
        "from staging.stg_shop__point_adjustments order by adjustment_id"
    )
    assert accepted == [
        ("A01", "c1", 50, "goodwill", datetime(2025, 1, 10, 10, 0)),
        ("A02", "c1", -20, "correction", datetime(2025, 1, 11, 2, 0)),  # +08:00 → UTC
        ("A03", "c2", 30, "goodwill", datetime(2025, 1, 12, 10, 0)),  # code trimmed, lowered
    ]


def test_good_rows_are_accepted_and_standardized(quarantine_warehouse):
    rows = quarantine_warehouse.keyed(
        "select order_id, ordered_at, amount, currency, channel, status, is_purchase, "
        "has_customer_record from staging.stg_shop__orders"
    )
    assert set(rows) == {"Q01", "Q02", "Q14", "Q15"}
    # Q14: unknown customer kept with a flag; 'usd' → USD at the seed's rate; aliases applied.
    assert rows["Q14"][1:] == (Decimal("72.00"), "USD", "online_shop", "cancelled", False, False)
    # Q15: +08:00 converted to UTC; '  APP ' and 'REFUNDED' standardized.
    assert rows["Q15"][0] == datetime(2025, 1, 11, 2, 0)
    assert rows["Q15"][3:5] == ("app", "refunded")
    assert rows["Q01"][4:] == ("completed", True, True)


def test_raw_rows_equal_accepted_plus_rejected_for_every_source(quarantine_warehouse):
    for source, raw, ok, bad, old in staging_split_counts(quarantine_warehouse):
        # one export per source: no later delivery supersedes anything
        assert (raw, old) == (ok + bad, 0), source
    # and dbt's own singular test ran in the build
    assert "assert_raw_rows_accounted_for" in quarantine_warehouse.dbt_output


def test_customers_are_standardized_and_bad_ones_quarantined(quarantine_warehouse):
    customers = quarantine_warehouse.keyed(
        "select customer_id, province, region, birth_date, has_invalid_birth_date, "
        "has_marketing_consent from staging.stg_shop__customers"
    )
    assert customers["c2"][:2] == ("Guangdong", "South")  # ' guangdong province '
    assert customers["c2"][2:4] == (None, True)  # bad birth date kept, flagged
    assert customers["c3"][:2] == ("Heilongjiang", "Northeast")
    assert customers["c4"][1] == "Unmapped"
    assert [c[4] for c in (customers["c1"], customers["c2"], customers["c3"])] == [
        True,
        False,
        True,
    ]
    rejects = sorted(
        quarantine_warehouse.query(
            "select coalesce(customer_id, ''), reject_reason from staging.customer_rejects"
        )
    )
    assert rejects == [
        ("", "missing_customer_id"),
        ("c3", "exact_duplicate"),
        ("c5", "unparseable_signed_up_at"),
    ]


def test_as_of_date_defaults_to_the_last_accepted_order(quarantine_warehouse):
    row = quarantine_warehouse.query(
        "select as_of_date, as_of_date_source from intermediate.int_as_of_date"
    )[0]
    assert str(row[0]) == "2025-01-11" and row[1] == "last_order_date"


def test_requested_as_of_date_and_malformed_value(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(FIXTURES / "minimal", raw)
    wh = build_warehouse(raw, tmp_path, select=STAGING_SELECTION, as_of_date="2025-03-01")
    assert str(wh.scalar("select as_of_date from intermediate.int_as_of_date")) == "2025-03-01"
    # later orders stay in staging (they are a backtest's holdout)
    assert wh.scalar("select count(*) from staging.stg_shop__orders") == 6

    env = dbt_env(wh.path, tmp_path, raw, CW_AS_OF_DATE="2025-3-1")
    proc = run_dbt(["build", "--select", "int_as_of_date"], env, check=False)
    assert proc.returncode != 0
    assert "CW_AS_OF_DATE='2025-3-1' is not a date" in proc.stdout


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_minimal_contract_builds_in_both_formats(tmp_path, fmt):
    raw = tmp_path / "raw"
    raw.mkdir()
    source = FIXTURES / "minimal" / "orders.csv"
    if fmt == "csv":
        shutil.copy(source, raw / "orders.csv")
    else:
        import duckdb

        with duckdb.connect() as con:
            con.execute(
                f"copy (select * from read_csv('{source}', all_varchar = true)) "
                f"to '{raw / 'orders.parquet'}' (format parquet)"
            )
    wh = build_warehouse(raw, tmp_path, select=STAGING_SELECTION)
    rows = wh.query(
        "select order_id, ordered_at, amount from staging.stg_shop__orders order by order_id"
    )
    assert [r[0] for r in rows] == ["A1", "A2", "A3", "A4", "A5", "A6"]
    assert rows[3][1] == datetime(2025, 3, 1, 1, 0)  # 09:00+08:00
    assert wh.scalar("select count(*) from staging.order_rejects") == 0
