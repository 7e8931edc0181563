"""Odd shops: the backtest's windows follow the span of the history, and a history too short (or
nobody before the calibration end, or a rejected fit) skips the backtest with a reason, never
fails (tests/test_prediction_fallbacks.py says why these tests)."""

from __future__ import annotations

import math
from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest

from customer_warehouse import predictions as P

from .prediction_fallback_helpers import AS_OF, purchase_days

# --------------------------------------------------------------------------------------------
# Backtest windows and skips
# --------------------------------------------------------------------------------------------


def test_windows_follow_the_span():
    # Long history: the configured 182 days.
    w = P.backtest_windows(date(2020, 1, 1), date(2024, 12, 31))
    assert (w.holdout_days, w.calibration_end, w.holdout_end) == (
        182,
        date(2024, 12, 31) - timedelta(days=182),
        date(2024, 12, 31),
    )
    assert w.skip_reason is None
    # One year: a third of 365 days.
    w = P.backtest_windows(date(2024, 1, 1), date(2024, 12, 31))
    assert (w.history_days, w.holdout_days, w.calibration_end) == (365, 121, date(2024, 9, 1))
    # The minimum history with the defaults, and one day less.
    need = P.min_backtest_history_days()
    assert need == 134
    assert P.backtest_windows(AS_OF - timedelta(days=need), AS_OF).skip_reason is None
    short = P.backtest_windows(AS_OF - timedelta(days=need - 1), AS_OF)
    assert short.skip_reason and "133 days" in short.skip_reason
    assert "at least 134 days" in short.skip_reason


def test_short_history_skips_the_backtest_with_a_reason():
    tx = purchase_days(300, date(2025, 1, 1), date(2025, 3, 1))
    bt = P.run_backtest(tx, "2025-03-01")
    assert bt.skipped and bt.status == "skipped"
    table = bt.table
    assert list(table.columns) == list(P.BACKTEST_COLUMNS) and len(table) == 1
    row = table.iloc[0]
    assert row["backtest_status"] == "skipped"
    assert "59 days" in row["status_reason"] and "134 days" in row["status_reason"]
    assert row["holdout_end"] == date(2025, 3, 1) and pd.isna(row["calibration_end"])
    assert pd.isna(row["metric"]) and pd.isna(row["value"])
    # The skipped table lands in DuckDB with the same types as a full one.
    con = duckdb.connect()
    con.register("bt", table)
    types = dict(con.execute("select column_name, column_type from (describe bt)").fetchall())
    assert types["value"] == "DOUBLE" and types["calibration_end"] == "DATE"
    assert types["metric"] == types["status_reason"] == "VARCHAR"
    assert types["customers"] == types["period_index"] == "BIGINT"


@pytest.mark.parametrize(
    "tx",
    [
        pd.DataFrame({"customer_id": [], "purchase_date": [], "value": []}),
        pd.DataFrame({"customer_id": ["a"], "purchase_date": ["2025-06-30"], "value": [5.0]}),
    ],
    ids=["no_purchase", "one_day"],
)
def test_no_history_skips_the_backtest(tx):
    bt = P.run_backtest(tx, AS_OF)
    assert bt.skipped and len(bt.table) == 1
    assert bt.reason.startswith("Backtest skipped")


def test_nobody_before_calibration_end_is_a_skip_not_an_error():
    tx = purchase_days(20, date(2025, 1, 1), date(2025, 6, 30))
    table = P.backtest(tx, "2024-12-31", "2025-06-30")
    assert table["backtest_status"].tolist() == ["skipped"]
    assert (
        "no customer bought on or before calibration_end 2024-12-31"
        in (table["status_reason"].iloc[0])
    )
    assert table["calibration_end"].iloc[0] == date(2024, 12, 31)


def test_long_enough_history_runs_on_windows_from_the_span():
    """One year, 40 customers: the holdout is a third of the year, the calibration fit falls
    back to naive_rate (too few customers), and the backtest runs on that fallback."""
    first, as_of = date(2024, 1, 1), date(2024, 12, 31)
    tx = purchase_days(40, first, as_of)
    bt = P.run_backtest(tx, as_of)
    assert not bt.skipped and bt.status == "ran"
    t = bt.table
    assert list(t.columns) == list(P.BACKTEST_COLUMNS)
    assert set(t["backtest_status"]) == {"ran"}
    assert set(t["calibration_end"]) == {date(2024, 9, 1)} and set(t["holdout_end"]) == {as_of}
    assert bt.windows.holdout_days == 121 and bt.windows.first_purchase_date == first
    hold = t[(t["phase"] == "holdout") & t["period_index"].notna()]
    assert hold["period_start"].min() == date(2024, 9, 2)
    assert hold["period_end"].max() == as_of
    assert hold["metric"].eq("repeat_purchases_actual").sum() == math.ceil(121 / 7)
    cal = t[(t["phase"] == "calibration") & t["period_index"].notna()]
    assert cal["period_start"].min() == first and cal["period_end"].max() == date(2024, 9, 1)
    assert set(t["prediction_method"]) == {"naive_rate"}
    assert "Calibration fit: Not fitted" in bt.reason and "min_customers" in bt.reason
    assert np.isfinite(t["value"].to_numpy(dtype="float64")).all()
    assert not t["metric"].str.startswith("param_").any()  # nothing fitted, no parameters
    # Purchases after the as-of date are ignored.
    later = pd.DataFrame(
        {"customer_id": ["c000"], "purchase_date": [date(2025, 3, 1)], "value": 1.0}
    )
    again = P.run_backtest(pd.concat([tx, later]), as_of)
    pd.testing.assert_frame_equal(again.table, t)


def test_backtest_survives_a_rejected_fit():
    tx = purchase_days(400, date(2024, 1, 1), date(2024, 12, 31), seed=2)
    bt = P.run_backtest(tx, date(2024, 12, 31), bounds={"r": (100.0, 1000.0)})
    assert bt.status == "ran" and bt.prediction_method == "naive_rate"
    assert "The BG/NBD fit was rejected" in bt.reason and "parameter r" in bt.reason
