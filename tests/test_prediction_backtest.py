"""Purchase predictions: the calibration/holdout backtest on simulated purchase days, warnings,
fits on a sample, the demo generator's truth and pytensor's compile cache (tolerances:
tests/test_predictions.py)."""

from __future__ import annotations

import math
import warnings
from datetime import date

import numpy as np
import pandas as pd
import pytest

from customer_warehouse import predictions as P

from .prediction_helpers import AS_OF, GG_TRUTH, N_SIM, TRUTH


def simulate_transactions(
    n: int,
    params: dict[str, float],
    gg_params: dict[str, float],
    *,
    start: str = "2022-01-01",
    calibration_days: int = 365,
    total_days: int = 546,
    seed: int = 0,
) -> pd.DataFrame:
    """Purchase days (customer_id, purchase_date, value) from a known BG/NBD + Gamma-Gamma.

    First purchases are spread over the calibration year. Events of an ever-alive customer are
    K ~ Poisson(lambda * horizon) uniform times; the customer drops out after the N-th repeat
    purchase (N ~ Geometric(p)). A continuous time tau after the first purchase lands on day
    first + ceil(tau), so "expected purchases by day d" is E[X(d - first)].
    """
    rng = np.random.default_rng(seed)
    lam = rng.gamma(params["r"], 1 / params["alpha"], n)
    p = np.clip(rng.beta(params["a"], params["b"], n), 1e-12, 1)
    first = rng.integers(0, calibration_days, n)
    horizon = total_days - first
    K = rng.poisson(lam * horizon)
    kept = np.minimum(K, rng.geometric(p))
    cust = np.repeat(np.arange(n), K)
    times = rng.uniform(0, 1, K.sum()) * np.repeat(horizon, K)
    order = np.lexsort((times, cust))
    cust, times = cust[order], times[order]
    rank = np.arange(cust.size) - np.repeat(np.cumsum(K) - K, K)
    keep = rank < np.repeat(kept, K)
    cust, day = cust[keep], first[cust[keep]] + np.ceil(times[keep]).astype(int)
    nu = rng.gamma(gg_params["q"], 1 / gg_params["v"], n)
    all_c = np.concatenate([np.arange(n), cust])
    all_d = np.concatenate([first, day])
    value = rng.gamma(gg_params["p"], 1 / nu[all_c])
    d0 = np.datetime64(start, "D")
    return pd.DataFrame(
        {"customer_id": all_c, "purchase_date": d0 + all_d.astype("timedelta64[D]"), "value": value}
    )


# ------------------------------------------------------------------------------------------
# Backtest
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backtest_table() -> pd.DataFrame:
    tx = simulate_transactions(8000, TRUTH, GG_TRUTH, seed=21)
    return P.backtest(tx, "2022-12-31", "2023-06-30", "day")


def test_backtest_table_shape(backtest_table):
    bt = backtest_table
    assert list(bt.columns) == list(P.BACKTEST_COLUMNS)
    assert np.isfinite(bt["value"]).all()
    assert set(bt["prediction_method"]) == {"bg_nbd"}
    assert set(bt["phase"]) == {"calibration", "holdout"}
    per_period = bt[bt["period_index"].notna()]
    assert set(per_period["metric"]) == {
        "repeat_purchases_actual",
        "repeat_purchases_predicted",
        "cumulative_repeat_purchases_actual",
        "cumulative_repeat_purchases_predicted",
    }
    holdout_periods = per_period[
        (per_period["phase"] == "holdout") & (per_period["metric"] == "repeat_purchases_actual")
    ]
    assert len(holdout_periods) == math.ceil(181 / 7)  # 2023-01-01 .. 2023-06-30, weekly
    assert holdout_periods["period_start"].iloc[0] == date(2023, 1, 1)
    assert holdout_periods["period_end"].iloc[-1] == date(2023, 6, 30)
    assert per_period["period_index"].is_monotonic_increasing
    summary = bt[bt["period_index"].isna()].set_index(["metric", "segment"])["value"]
    for metric in (
        "auc_buys_again",
        "gini_buys_again",
        "top_decile_capture_buyers",
        "mae_purchases",
        "rmse_purchases",
        "total_purchases_relative_error",
    ):
        assert (metric, "all") in summary.index, metric
    assert ("param_r", "bg_nbd") in summary.index and ("param_q", "gamma_gamma") in summary.index


def test_backtest_predictions_track_what_happened(backtest_table):
    bt = backtest_table
    summary = bt[bt["period_index"].isna()].set_index(["metric", "segment"])["value"]
    per = bt[bt["period_index"].notna()]

    def total(metric: str, phase: str) -> float:
        return float(per[(per["metric"] == metric) & (per["phase"] == phase)]["value"].sum())

    hold_actual = total("repeat_purchases_actual", "holdout")
    hold_pred = total("repeat_purchases_predicted", "holdout")
    assert hold_actual == summary[("total_purchases_actual", "all")]
    assert hold_pred == pytest.approx(summary[("total_purchases_predicted", "all")], rel=1e-9)
    assert hold_pred == pytest.approx(hold_actual, rel=0.10)
    cal_actual = total("repeat_purchases_actual", "calibration")
    assert total("repeat_purchases_predicted", "calibration") == pytest.approx(cal_actual, rel=0.10)
    assert summary[("total_value_predicted", "all")] == pytest.approx(
        summary[("total_value_actual", "all")], rel=0.15
    )
    assert summary[("auc_buys_again", "all")] > 0.65
    assert summary[("top_decile_lift", "all")] > 2
    assert summary[("mae_purchases", "all")] < summary[("mae_purchases_naive_baseline", "all")]
    # Calibration frequency segments: more past purchase days -> more predicted and actual.
    means = summary.xs("mean_predicted_purchases", level="metric")
    assert means["frequency=0"] < means["frequency=3"] < means["frequency=7+"]
    assert summary[("param_r", "bg_nbd")] == pytest.approx(TRUTH["r"], rel=0.25)


def test_no_warnings_escape_from_scoring(scorer, sim):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P.score_customers(sim.head(5000), scorer)


def test_fit_on_a_sample_still_scores_everyone(sim, bg_fit):
    run = P.run_predictions(sim, AS_OF, max_fit_customers=5000, batch_size=6000)
    assert run.bg_fit.customers_used == 5000 and len(run.predictions) == N_SIM
    assert set(run.params["customers_used"]) <= {5000, run.gg_fit.customers_used}
    assert run.gg_fit.customers_used < 5000  # repeat buyers of the sample only
    # A quarter of the data gives the same parameters within a few standard errors.
    se = bg_fit.diagnostics["std_errors"]
    for name in P.BG_NBD_PARAMS:
        assert abs(run.bg_fit.params[name] - bg_fit.params[name]) < 5 * 2 * se[name], name
    assert (run.predictions["prediction_method"] == "bg_nbd").all()


def test_independent_mle_recovers_the_demo_generators_truth():
    """The demo data generator's BG/NBD core and our likelihood describe the same process.

    Draws 20 000 customers with the generator's default (true) parameters through
    ``demo.simulate_bg_nbd`` and checks the independent MLE lands within 4 standard errors
    of them (the end-to-end check through dbt belongs to the asset's integration test).
    """
    demo = pytest.importorskip("customer_warehouse.demo")
    truth = demo.BgNbdParams()
    rng = np.random.default_rng(7)
    n = 20_000
    lam = rng.gamma(truth.r, 1 / truth.alpha, n)
    p = rng.beta(truth.a, truth.b, n)
    T = rng.uniform(0, 1095, n)
    draw = demo.simulate_bg_nbd(rng, lam, p, T)
    x = draw.repeat_purchases.astype(float)
    last = np.zeros(n)
    ends = np.cumsum(draw.repeat_purchases) - 1
    last[x > 0] = draw.repeat_times[ends[x > 0]]
    features = pd.DataFrame(
        {
            "customer_id": np.arange(n),
            "frequency": x,
            "recency": last,
            "T": T,
            "monetary_value": 0.0,
        }
    )
    fit = P.fit_bg_nbd_mle(features)
    assert fit.converged
    se = fit.diagnostics["std_errors"]
    for name in P.BG_NBD_PARAMS:
        want = getattr(truth, name)
        assert abs(fit.params[name] - want) < 4 * se[name], (name, fit.params[name], want)


def test_pytensor_compile_cache_is_kept_beside_the_code_unless_configured(tmp_path):
    """Before pytensor is imported, its base_compiledir points at the project's cache folder
    (a warm cache turns a ~35 s first fit into ~1 s of loading); a configured pytensor, an
    already imported one or an unwritable folder are left alone."""
    cache = tmp_path / "cache" / "pytensor"
    env: dict[str, str] = {"PYTENSOR_FLAGS": "floatX=float64"}
    assert P.use_project_compile_cache(env, cache, modules={}) == cache
    assert env["PYTENSOR_FLAGS"] == f"floatX=float64,base_compiledir={cache}" and cache.is_dir()
    configured = {"PYTENSOR_FLAGS": "compiledir=/elsewhere"}
    assert P.use_project_compile_cache(configured, cache, modules={}) is None
    assert configured == {"PYTENSOR_FLAGS": "compiledir=/elsewhere"}
    imported: dict[str, str] = {}
    assert P.use_project_compile_cache(imported, cache, modules={"pytensor": object()}) is None
    assert imported == {}
    (tmp_path / "file").write_text("")
    blocked: dict[str, str] = {}
    assert P.use_project_compile_cache(blocked, tmp_path / "file" / "sub", modules={}) is None
    assert blocked == {}
    assert P.PYTENSOR_CACHE_DIR.parent.name == ".cache"  # in the project, ignored by git
