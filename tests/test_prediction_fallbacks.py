"""Odd shops: the predictions and the backtest fall back or skip with a reason, never fail.

Why these tests: a first run on a real shop's export is rarely the demo's three years of
thousands of customers. A few weeks of history, a shop where nobody has left yet, only one-time
buyers, a handful of customers, one day of orders or only refunds must each give a warehouse:
predictions for every buyer (a documented fallback, no NaN), the status and reason of every
model in ``clv_model_params``, a skipped backtest that says why, and in Dagster a successful run
with a WARN check instead of a failed one.

The inputs are small synthetic frames built here (not the demo generator), so each shape is
exactly what its name says. Fits are attempted only where the test needs one (pymc compiles
its graph once per machine; pytensor caches it on disk). The Dagster tests run the two assets
against a temporary DuckDB file that holds just the tables they read.
"""

from __future__ import annotations

import math
import re
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from customer_warehouse import predictions as P
from customer_warehouse.predictions import fitting
from customer_warehouse.predictions.contract import NUMERIC_PREDICTION_COLUMNS

AS_OF = date(2025, 6, 30)
TRUTH = {"r": 0.25, "alpha": 30.0, "a": 0.8, "b": 2.5}
GG_TRUTH = {"p": 6.0, "q": 4.0, "v": 15.0}
NUMERIC = list(NUMERIC_PREDICTION_COLUMNS)


def features(x, tx, T, m=None, prefix: str = "c") -> pd.DataFrame:
    """The input contract (days) from arrays of frequency, recency, T (and spend)."""
    x = np.asarray(x, dtype="float64")
    return pd.DataFrame(
        {
            "customer_id": [f"{prefix}{i:04d}" for i in range(x.size)],
            "frequency": x,
            "recency": np.asarray(tx, dtype="float64"),
            "T": np.asarray(T, dtype="float64"),
            "monetary_value": np.zeros(x.size) if m is None else np.asarray(m, dtype="float64"),
        }
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


def assert_sane_predictions(run: P.PredictionRun, n: int, method: str) -> None:
    out = run.predictions
    assert list(out.columns) == list(P.PREDICTION_COLUMNS)
    assert len(out) == n and out["customer_id"].is_unique
    assert np.isfinite(out[NUMERIC].to_numpy(dtype="float64")).all()
    assert (out["prediction_method"] == method).all()
    assert out["churn_risk_band"].isin(P.CHURN_BANDS).all()
    assert out["p_alive"].between(0, 1).all() and out["p_no_purchase_90d"].between(0, 1).all()


def status_rows(run: P.PredictionRun) -> dict[str, pd.Series]:
    params = run.params
    assert list(params.columns) == list(P.PARAM_COLUMNS)
    assert set(params["model"]) == {"bg_nbd", "gamma_gamma"}
    return {model: rows.iloc[0] for model, rows in params.groupby("model")}


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


# --------------------------------------------------------------------------------------------
# Backtest windows and skips
# --------------------------------------------------------------------------------------------


def purchase_days(n: int, first: date, last: date, seed: int = 0) -> pd.DataFrame:
    """Purchase days of n customers between first and last: the first customer starts on
    ``first``, the others at random; each then buys with a daily probability of 1/20."""
    rng = np.random.default_rng(seed)
    span = (last - first).days
    customers, offsets = [], []
    for i in range(n):
        start = 0 if i == 0 else int(rng.integers(0, span + 1))
        later = start + 1 + np.flatnonzero(rng.random(span - start) < 0.05)
        days = np.concatenate([[start], later])
        customers += [f"c{i:03d}"] * days.size
        offsets.append(days)
    day = np.datetime64(first, "D") + np.concatenate(offsets).astype("timedelta64[D]")
    return pd.DataFrame(
        {
            "customer_id": customers,
            "purchase_date": [d.item() for d in day],
            "value": rng.uniform(10, 90, day.size),
        }
    )


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


# --------------------------------------------------------------------------------------------
# Through Dagster: a temporary warehouse with just the tables the assets read
# --------------------------------------------------------------------------------------------


def build_warehouse(path: Path, tx: pd.DataFrame, as_of: date, prospects: int = 2) -> None:
    """marts.customer_features, intermediate.int_as_of_date, seeds.churn_risk_bands and
    intermediate.int_orders_aggregated_to_customer_days from purchase days, with plain SQL."""
    con = duckdb.connect(str(path))
    for schema in ("marts", "intermediate", "seeds"):
        con.execute(f"create schema {schema}")
    con.execute("create table intermediate.int_as_of_date as select ?::date as as_of_date", [as_of])
    con.execute(
        "create table seeds.churn_risk_bands as select band, min_p_alive from read_csv(?)",
        [str(P.CHURN_BANDS_SEED)],
    )
    con.register("tx", tx)
    con.execute("""
        create table intermediate.int_orders_aggregated_to_customer_days as
        select cast(customer_id as varchar) as customer_id,
               cast(purchase_date as date) as purchase_date,
               cast(sum(value) as decimal(18, 2)) as revenue
        from tx group by all
    """)
    con.execute(
        """
        create table marts.customer_features as
        with d as (
            select customer_id, purchase_date, revenue,
                   row_number() over (partition by customer_id order by purchase_date) as k
            from intermediate.int_orders_aggregated_to_customer_days
        ),
        c as (
            select customer_id, min(purchase_date) as first_purchase_date,
                   max(purchase_date) as last_purchase_date, count(*) - 1 as frequency,
                   sum(revenue) filter (where k > 1) as repeat_revenue
            from d group by customer_id
        )
        select customer_id, first_purchase_date, frequency,
               date_diff('day', first_purchase_date, last_purchase_date) as recency_days,
               date_diff('day', first_purchase_date, ?::date) as tenure_days,
               case when frequency > 0 then repeat_revenue / frequency end
                   as avg_repeat_purchase_day_value
        from c
        union all
        select 'prospect-' || i, null, 0, 0, 0, null from range(?) t(i)
        """,
        [as_of, prospects],
    )
    con.close()


@pytest.fixture
def dagster_env(tmp_path, monkeypatch) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    warehouse = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("CW_RAW_DIR", str(raw))
    monkeypatch.setenv("CW_WAREHOUSE_PATH", str(warehouse))
    monkeypatch.delenv("CW_AS_OF_DATE", raising=False)
    return warehouse


def materialize(run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    from orchestration.defs.predictions.assets import customer_predictions, prediction_backtest
    from orchestration.defs.resources import WarehouseResource

    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize(
            [customer_predictions, prediction_backtest],
            resources={"warehouse": WarehouseResource()},
            instance=instance,
            raise_on_error=False,
            run_config=run_config,
        )


def checks_by_name(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    return {
        e.event_specific_data.check_name: e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def metadata_of(result: dg.ExecuteInProcessResult, table: str) -> dict:
    key = dg.AssetKey(table.split("."))
    return next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == key
    )


BLOCKING = ("model_fit_is_sane", "one_prediction_per_customer", "predictions_are_finite")


def test_dagster_short_history_succeeds_with_warnings(dagster_env):
    """A handful of customers over two months: the run succeeds, the WARN checks fail with the
    reasons, the blocking checks pass, and the tables say what happened."""
    as_of = date(2025, 3, 1)
    build_warehouse(dagster_env, purchase_days(5, date(2025, 1, 1), as_of, seed=1), as_of)
    result = materialize()
    assert result.success
    checks = checks_by_name(result)
    assert set(checks) == {*BLOCKING, "predictions_use_fitted_models", "backtest_ran"}
    for name in BLOCKING:
        assert checks[name].passed, (name, checks[name].description)
    warn = checks["predictions_use_fitted_models"]
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    assert "5 customers with a purchase" in warn.description
    assert "min_history_days" in warn.description
    skipped = checks["backtest_ran"]
    assert not skipped.passed and skipped.severity == dg.AssetCheckSeverity.WARN
    assert "Backtest skipped" in skipped.description and "59 days" in skipped.description

    meta = metadata_of(result, "marts.clv_model_params")
    assert meta["bg_nbd_fit_status"].value == "not_attempted"
    assert "min_customers" in meta["status_reasons"].value
    assert metadata_of(result, "marts.customer_predictions")["prediction_method"].value == (
        "naive_rate"
    )
    bt_meta = metadata_of(result, "marts.prediction_backtest")
    assert bt_meta["backtest_status"].value == "skipped"
    assert "59 days" in bt_meta["status_reason"].value

    with duckdb.connect(str(dagster_env), read_only=True) as con:
        params = con.execute(
            "select model, parameter, value, fit_status, status_reason "
            "from marts.clv_model_params order by model"
        ).fetchall()
        assert [(m, p, v, s) for m, p, v, s, _ in params] == [
            ("bg_nbd", None, None, "not_attempted"),
            ("gamma_gamma", None, None, "not_attempted"),
        ]
        assert all(reason for *_, reason in params)
        preds = con.execute(
            "select count(*), count(distinct prediction_method), min(prediction_method) "
            "from marts.customer_predictions"
        ).fetchall()[0]
        assert preds == (5, 1, "naive_rate")  # prospects get no row
        bt = con.execute(
            "select backtest_status, status_reason, holdout_end from marts.prediction_backtest"
        ).fetchall()
        assert len(bt) == 1 and bt[0][0] == "skipped" and "59 days" in bt[0][1]
        assert bt[0][2] == as_of


def test_dagster_only_refunds_writes_empty_predictions(dagster_env):
    """No customer with a purchase: an empty predictions table with every column, the status
    rows, a skipped backtest, and a successful run."""
    empty = pd.DataFrame(
        {
            "customer_id": pd.Series([], dtype=str),
            "purchase_date": pd.Series([], dtype="datetime64[ns]"),
            "value": pd.Series([], dtype=float),
        }
    )
    build_warehouse(dagster_env, empty, AS_OF, prospects=4)
    result = materialize()
    assert result.success
    checks = checks_by_name(result)
    for name in BLOCKING:
        assert checks[name].passed, (name, checks[name].description)
    assert not checks["predictions_use_fitted_models"].passed
    assert "no customer has a purchase" in checks["predictions_use_fitted_models"].description
    assert not checks["backtest_ran"].passed
    with duckdb.connect(str(dagster_env), read_only=True) as con:
        columns = con.execute("describe marts.customer_predictions").fetchall()
        assert [c[0] for c in columns] == list(P.PREDICTION_COLUMNS)
        types = {c[0]: c[1] for c in columns}
        assert types["customer_id"] == "VARCHAR" and types["p_alive"] == "DOUBLE"
        assert types["as_of_date"] == "DATE"
        assert con.execute("select count(*) from marts.customer_predictions").fetchone() == (0,)
        statuses = con.execute(
            "select model, fit_status from marts.clv_model_params order by model"
        ).fetchall()
        assert statuses == [("bg_nbd", "not_attempted"), ("gamma_gamma", "not_attempted")]


def test_dagster_one_year_runs_the_backtest_on_derived_windows(dagster_env):
    as_of = date(2024, 12, 31)
    build_warehouse(dagster_env, purchase_days(30, date(2024, 1, 1), as_of, seed=3), as_of)
    result = materialize()
    assert result.success
    checks = checks_by_name(result)
    assert checks["backtest_ran"].passed
    assert "calibration to 2024-09-01" in checks["backtest_ran"].description
    assert not checks["predictions_use_fitted_models"].passed  # 30 customers: naive_rate
    meta = metadata_of(result, "marts.prediction_backtest")
    assert meta["calibration_end"].value == "2024-09-01" and meta["holdout_days"].value == 121
    with duckdb.connect(str(dagster_env), read_only=True) as con:
        rows = con.execute(
            "select distinct calibration_end, holdout_end, backtest_status, prediction_method "
            "from marts.prediction_backtest"
        ).fetchall()
        assert rows == [(date(2024, 9, 1), as_of, "ran", "naive_rate")]


def test_dagster_missing_table_still_fails_fast(dagster_env):
    """A genuine error (the dbt models were never built) fails the run, not retried."""
    duckdb.connect(str(dagster_env)).close()
    result = materialize()
    assert not result.success
    failures = [
        e.event_specific_data.error.message
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    ]
    assert any("Reading the prediction inputs failed" in m for m in failures), failures
    assert "STEP_UP_FOR_RETRY" not in {e.event_type_value for e in result.all_events}
