"""Odd shops: the predictions fall back with a reason, never fail (the backtest:
tests/test_prediction_fallbacks_backtest.py; in Dagster:
tests/test_prediction_fallbacks_dagster.py).

Why these tests: a first run on a real shop's export is rarely the demo's three years of
thousands of customers. A few weeks of history, a shop where nobody has left yet, only one-time
buyers, a handful of customers, one day of orders or only refunds must each give a warehouse:
predictions for every buyer (a documented fallback, no NaN), the status and reason of every
model in ``clv_model_params``, a skipped backtest that says why, and in Dagster a successful run
with a WARN check instead of a failed one.

Fits are attempted only where the test needs one (pymc compiles its graph once per machine;
pytensor caches it on disk)."""

from __future__ import annotations

import re

import duckdb
import numpy as np
import pandas as pd
import pytest

from customer_warehouse import predictions as P
from customer_warehouse.predictions import fitting

from .prediction_fallback_helpers import (
    AS_OF,
    GG_TRUTH,
    NUMERIC,
    TRUTH,
    assert_sane_predictions,
    features,
    status_rows,
)


def few_weeks() -> pd.DataFrame:
    """40 customers, three weeks of history, some repeat buyers."""
    rng = np.random.default_rng(1)
    T = rng.integers(0, 21, 40)
    x = np.where(rng.random(40) < 0.4, rng.integers(1, 3, 40), 0)
    x = np.where(T > 0, x, 0)
    tx = np.where(x > 0, np.minimum(T, rng.integers(1, 21, 40)), 0)
    return features(x, tx, T, np.where(x > 0, rng.uniform(20, 200, 40), 0))


def nobody_left() -> pd.DataFrame:
    """300 customers over a year who all still buy every 7-14 days up to the as-of date."""
    rng = np.random.default_rng(3)
    T = 365 - rng.integers(0, 200, 300)
    gap = rng.integers(7, 15, 300)
    x = T // gap
    return features(x, x * gap, T, rng.uniform(20, 80, 300))


def one_time_buyers() -> pd.DataFrame:
    """120 customers over a year, each bought exactly once."""
    return features(np.zeros(120), np.zeros(120), np.linspace(0, 365, 120).round())


def no_repeat() -> pd.DataFrame:
    """500 customers over two years; each one's orders fall on a single day (one purchase day,
    so frequency 0 however many orders): enough customers and history, no repeat buyer."""
    return features(np.zeros(500), np.zeros(500), np.linspace(0, 730, 500).round())


def handful(n: int) -> pd.DataFrame:
    """n customers (1..5) over two months; the first one bought twice."""
    x = np.zeros(n)
    x[0] = 1
    tx = np.where(x > 0, 10.0, 0.0)
    return features(x, tx, np.full(n, 60.0), np.where(x > 0, 35.0, 0.0))


def one_day() -> pd.DataFrame:
    """30 customers, the whole history is the as-of date (T = 0 for everyone)."""
    return features(np.zeros(30), np.zeros(30), np.zeros(30))


def zero_customers() -> pd.DataFrame:
    """Only refunded orders: marts.customer_features has no customer with a purchase."""
    return features([], [], [])


SHAPES = {
    "few_weeks": (few_weeks, ["min_customers", "min_history_days"]),
    "one_time_buyers": (one_time_buyers, ["min_customers", "nobody has bought on a second day"]),
    "no_repeat": (no_repeat, ["nobody has bought on a second day"]),
    "handful_1": (lambda: handful(1), ["1 customer with a purchase", "min_history_days"]),
    "handful_3": (lambda: handful(3), ["3 customers with a purchase"]),
    "handful_5": (lambda: handful(5), ["5 customers with a purchase", "1 repeat buyer"]),
    "one_day": (one_day, ["purchase history of 0 days", "nobody has bought on a second day"]),
    "zero_customers": (zero_customers, ["no customer has a purchase"]),
}


# --------------------------------------------------------------------------------------------
# Odd shapes: nothing fitted, the documented fallback, the reason recorded
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_odd_shapes_fall_back_to_the_naive_rate_with_a_reason(shape):
    make, needles = SHAPES[shape]
    data = make()
    run = P.run_predictions(data, AS_OF)
    assert_sane_predictions(run, len(data), "naive_rate")
    assert run.bg_fit is None and run.gg_fit is None and not run.uses_fitted_models
    assert run.bg_status.status == "not_attempted" and run.gg_status.status == "not_attempted"
    rows = status_rows(run)
    assert len(run.params) == 2  # one status row per model, no parameters
    for model, row in rows.items():
        assert row["fit_status"] == "not_attempted", model
        assert pd.isna(row["parameter"]) and pd.isna(row["value"]), model
        assert isinstance(row["status_reason"], str) and len(row["status_reason"]) > 20, model
        assert row["as_of_date"] == AS_OF and row["customers_used"] == 0
    reason = rows["bg_nbd"]["status_reason"]
    for needle in needles:
        assert needle in reason, (needle, reason)
    if len(data):
        assert "naive_rate" in reason  # says what the predictions use instead
        assert "BG/NBD was not fitted" in rows["gamma_gamma"]["status_reason"]
    assert set(run.fallback_reasons) == {"bg_nbd", "gamma_gamma"}


def test_zero_customers_give_an_empty_typed_table():
    run = P.run_predictions(zero_customers().astype({"customer_id": object}), AS_OF)
    assert run.predictions.empty
    assert list(run.predictions.columns) == list(P.PREDICTION_COLUMNS)
    con = duckdb.connect()
    con.register("preds", run.predictions)
    con.register("params", run.params)
    con.execute("create table p as select * from preds")
    con.execute("create table m as select * from params")
    types = dict(con.execute("select column_name, column_type from (describe p)").fetchall())
    assert types["customer_id"] == "VARCHAR"
    assert types["as_of_date"] == types["predicted_next_purchase_date"] == "DATE"
    assert types["churn_risk_band"] == types["prediction_method"] == "VARCHAR"
    assert {types[c] for c in NUMERIC} == {"DOUBLE"}
    # All-NULL columns of the status rows still get real types.
    mtypes = dict(con.execute("select column_name, column_type from (describe m)").fetchall())
    assert mtypes["parameter"] == mtypes["fit_method"] == mtypes["status_reason"] == "VARCHAR"
    assert mtypes["value"] == mtypes["log_likelihood"] == "DOUBLE"
    assert mtypes["converged"] == "BOOLEAN"


def test_min_history_days_is_a_parameter():
    """Enough customers and repeat buyers over 80 days: too short by default (90), fitted
    (attempted) when the minimum is lowered; here we only check it is no longer the reason."""
    rng = np.random.default_rng(5)
    T = rng.integers(1, 80, 400)
    x = rng.integers(0, 4, 400)
    tx = np.where(x > 0, rng.integers(0, 80, 400) % np.maximum(T, 1), 0)
    data = features(x, np.minimum(tx, T), T, np.where(x > 0, 30.0, 0))
    run = P.run_predictions(data, AS_OF)
    assert run.bg_status.status == "not_attempted"
    assert "min_history_days" in run.bg_status.reason
    assert "min_customers" not in run.bg_status.reason
    assert "min_repeat_customers" not in run.bg_status.reason
    run = P.run_predictions(data, AS_OF, min_history_days=30, bounds={"r": (100.0, 1e3)})
    assert run.bg_status.status == "fallback"  # attempted (then rejected by the bounds)
    assert_sane_predictions(run, 400, "naive_rate")


# --------------------------------------------------------------------------------------------
# Fits that are attempted and rejected
# --------------------------------------------------------------------------------------------


def test_nobody_left_is_attempted_and_falls_back_with_the_parameter_in_the_reason():
    """Every customer still buys regularly: no sign of dropout, so the BG/NBD's dropout
    parameters run to the edge of their range (the issue's ``a = 7e-06``)."""
    data = nobody_left()
    run = P.run_predictions(data, AS_OF)
    assert_sane_predictions(run, len(data), "naive_rate")
    assert run.bg_status.status == "fallback" and run.bg_status.fit is not None
    assert run.bg_fit is None and run.scorer.bg_params is None
    rows = status_rows(run)
    reason = rows["bg_nbd"]["status_reason"]
    assert reason.startswith("The BG/NBD fit was rejected")
    assert "naive_rate" in reason
    assert re.search(r"parameter (r|alpha|a|b) = |did not converge", reason), reason
    assert rows["bg_nbd"]["fit_status"] == "fallback"
    assert rows["bg_nbd"]["customers_used"] == len(data)  # the fit did use them
    assert rows["bg_nbd"]["fit_method"] == "map" and pd.isna(rows["bg_nbd"]["value"])
    assert rows["gamma_gamma"]["fit_status"] == "not_attempted"


@pytest.fixture(scope="module")
def simulated() -> pd.DataFrame:
    return P.simulate_bg_nbd(600, TRUTH, max_T=730.0, gg_params=GG_TRUTH, seed=4)


def test_bg_nbd_outside_strict_bounds_falls_back_to_naive_rate(simulated):
    run = P.run_predictions(simulated, AS_OF, bounds={"r": (100.0, 1000.0)})
    assert_sane_predictions(run, len(simulated), "naive_rate")
    rows = status_rows(run)
    assert rows["bg_nbd"]["fit_status"] == "fallback"
    assert "parameter r = " in rows["bg_nbd"]["status_reason"]
    assert "outside the sane range [100, 1000]" in rows["bg_nbd"]["status_reason"]
    assert rows["gamma_gamma"]["fit_status"] == "not_attempted"


def test_gamma_gamma_outside_strict_bounds_keeps_the_bg_nbd(simulated):
    run = P.run_predictions(simulated, AS_OF, bounds={"q": (1e3, 1e4)})
    assert_sane_predictions(run, len(simulated), "bg_nbd_mean_spend")
    assert run.bg_fit is not None and run.gg_fit is None
    params = run.params
    fitted = params[params["fit_status"] == "fitted"]
    assert fitted["model"].tolist() == ["bg_nbd"] * 4
    assert fitted["value"].notna().all() and fitted["status_reason"].isna().all()
    gg = status_rows(run)["gamma_gamma"]
    assert gg["fit_status"] == "fallback" and "parameter q = " in gg["status_reason"]
    assert "bg_nbd_mean_spend" in gg["status_reason"]
    assert run.fallback_reasons.keys() == {"gamma_gamma"}


def test_every_bound_side_has_an_explanation():
    """Strict bounds can reject any parameter on either side; the message must never fail
    (it used to raise KeyError for a q below a raised lower bound)."""
    good = {**TRUTH, **GG_TRUTH}
    for name in (*P.BG_NBD_PARAMS, *P.GAMMA_GAMMA_PARAMS):
        model = "bg_nbd" if name in P.BG_NBD_PARAMS else "gamma_gamma"
        names = P.BG_NBD_PARAMS if model == "bg_nbd" else P.GAMMA_GAMMA_PARAMS
        fit = P.FitResult(model, {k: good[k] for k in names}, -1.0, 100, True, "day", "map")
        v = good[name]
        for bounds in ({name: (v * 2, v * 3)}, {name: (v / 3, v / 2)}):
            with pytest.raises(P.FitError, match=f"parameter {name} = "):
                P.validate_fit(fit, bounds)


def test_no_positive_repeat_spend_skips_gamma_gamma(simulated):
    run = P.run_predictions(simulated.assign(monetary_value=0.0), AS_OF)
    assert_sane_predictions(run, len(simulated), "bg_nbd_mean_spend")
    rows = status_rows(run)
    assert rows["bg_nbd"]["fit_status"] == "fitted"
    assert rows["gamma_gamma"]["fit_status"] == "not_attempted"
    assert "0 repeat buyers with a positive repeat spend" in rows["gamma_gamma"]["status_reason"]


def test_fit_library_failure_is_a_fallback(monkeypatch, simulated):
    """A numeric failure inside the fitting library on degenerate data falls back too; other
    exceptions (bugs, wrong options) propagate."""

    def boom(*args, **kwargs):
        raise FloatingPointError("overflow in exp")

    monkeypatch.setattr(fitting, "_fit_bg_nbd", boom)
    run = P.run_predictions(simulated, AS_OF)
    assert run.bg_status.status == "fallback"
    assert "FloatingPointError: overflow in exp" in run.bg_status.reason
    assert_sane_predictions(run, len(simulated), "naive_rate")
    with pytest.raises(ValueError, match="method must be"):
        P.run_predictions(simulated, AS_OF, method="nuts")  # type: ignore[arg-type]
