"""Purchase predictions: the scoring formulas - closed forms against a brute-force Monte Carlo of
the BG/NBD process and against pymc-marketing, CLV, next purchase dates, churn thresholds,
batches, thin customers, the fallback and the predictions table (tolerances:
tests/test_predictions.py)."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from customer_warehouse import predictions as P

from .prediction_helpers import AS_OF, GG_TRUTH, TRUTH


def posterior_monte_carlo(
    params: dict[str, float],
    x: float,
    tx: float,
    T: float,
    t: float,
    wait: float,
    n: int = 400_000,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Brute-force conditional predictions by importance sampling + simulating the future.

    Uses only the BG/NBD generative story: draws (lambda, p) (lambda from a proposal covering
    both posterior branches, p from its prior), weights them by prior/proposal x likelihood of
    the observed history, draws alive/dead in proportion to the two ways the history can
    happen, then simulates the next t: Poisson events, dropout after the Geometric(p)-th.
    Returns estimate and Monte Carlo standard error for p_alive, E[X(t)], P(X(t)=0) and the
    probability that an alive customer makes no purchase within ``wait``.
    """
    r, alpha, a, b = (params[k] for k in P.BG_NBD_PARAMS)
    rng = np.random.default_rng(seed)
    half = n // 2
    lam = np.concatenate(
        [rng.gamma(r + x, 1 / (alpha + T), half), rng.gamma(r + x, 1 / (alpha + tx), n - half)]
    )
    log_q = np.logaddexp(
        stats.gamma.logpdf(lam, r + x, scale=1 / (alpha + T)),
        stats.gamma.logpdf(lam, r + x, scale=1 / (alpha + tx)),
    ) - math.log(2)
    p = np.clip(rng.beta(a, b, n), 1e-300, 1 - 1e-16)
    log_alive = x * np.log1p(-p) + x * np.log(lam) - lam * T
    if x > 0:
        log_dead = np.log(p) + (x - 1) * np.log1p(-p) + x * np.log(lam) - lam * tx
    else:
        log_dead = np.full(n, -np.inf)
    log_hist = np.logaddexp(log_alive, log_dead)
    log_w = stats.gamma.logpdf(lam, r, scale=1 / alpha) - log_q + log_hist
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    alive = rng.random(n) < np.exp(log_alive - log_hist)
    future = np.where(alive, np.minimum(rng.poisson(lam * t), rng.geometric(p)), 0)
    no_buy_within_wait = (rng.poisson(lam * wait) == 0).astype(float)

    def est(f: np.ndarray, weights: np.ndarray = w) -> tuple[float, float]:
        weights = weights / weights.sum()
        mean = float(weights @ f)
        return mean, float(np.sqrt(weights**2 @ (f - mean) ** 2))

    return {
        "p_alive": est(alive.astype(float)),
        "expected": est(future.astype(float)),
        "p_zero": est((future == 0).astype(float)),
        "alive_no_buy_within_wait": est(no_buy_within_wait[alive], w[alive]),
    }


# ------------------------------------------------------------------------------------------
# Scoring formulas
# ------------------------------------------------------------------------------------------

HISTORIES = [  # (x, t_x, T): one-time buyers young and old, light, regular, lapsed, heavy
    (0, 0.0, 0.0),
    (0, 0.0, 200.0),
    (1, 50.0, 300.0),
    (3, 100.0, 400.0),
    (8, 200.0, 210.0),
    (8, 100.0, 600.0),
    (20, 600.0, 700.0),
]


@pytest.mark.parametrize(("x", "tx", "T"), HISTORIES)
def test_closed_forms_match_brute_force_monte_carlo(x, tx, T):
    t = 90.0
    wait = float(P.bg_nbd_median_wait(TRUTH, x, T))
    mc = posterior_monte_carlo(TRUTH, x, tx, T, t, wait, seed=int(x * 1000 + T))
    p_alive = float(P.bg_nbd_p_alive(TRUTH, x, tx, T))
    closed = {
        "p_alive": p_alive,
        "expected": float(P.bg_nbd_expected_purchases(TRUTH, t, x, tx, T)),
        "p_zero": float(P.bg_nbd_p_no_purchase(TRUTH, t, x, tx, T)),
        "alive_no_buy_within_wait": 0.5,  # definition of the median waiting time
    }
    for key, value in closed.items():
        mean, se = mc[key]
        assert abs(value - mean) <= 4 * se + 1e-3, (key, value, mean, se)


def test_closed_forms_match_pymc_marketing(sim, bg_fit):
    """pymc-marketing's own predictive methods at the same parameters (a third implementation).

    P(no purchase) is compared for repeat buyers only: for one-time buyers pymc-marketing
    0.19.2's ``expected_probability_no_purchase`` adds a dropout branch B(a+1, b-1) that the
    BG/NBD does not have (dropout happens only after a repeat purchase), while ours gives
    ((alpha+T)/(alpha+T+t))^r, which the Monte Carlo test above confirms.
    """
    head = sim.head(3000).assign(customer_id=np.arange(3000))
    model = bg_fit.fitted_model
    x, tx, T = head["frequency"], head["recency"], head["T"]
    theirs_alive = model.expected_probability_alive(head).values.ravel()
    theirs_e = model.expected_purchases(head, future_t=90).values.ravel()
    theirs_p0 = model.expected_probability_no_purchase(90, head).values.ravel()
    np.testing.assert_allclose(P.bg_nbd_p_alive(bg_fit.params, x, tx, T), theirs_alive, rtol=1e-9)
    np.testing.assert_allclose(
        P.bg_nbd_expected_purchases(bg_fit.params, 90, x, tx, T), theirs_e, rtol=1e-7
    )
    ours_p0 = P.bg_nbd_p_no_purchase(bg_fit.params, 90, x, tx, T)
    rep = (x > 0).to_numpy()
    np.testing.assert_allclose(ours_p0[rep], theirs_p0[rep], rtol=1e-9)
    r, alpha = bg_fit.params["r"], bg_fit.params["alpha"]
    np.testing.assert_allclose(
        ours_p0[~rep], ((alpha + T[~rep]) / (alpha + T[~rep] + 90)) ** r, rtol=1e-12
    )


def test_expected_spend_matches_pymc_marketing(sim, gg_fit):
    rep = sim[sim["frequency"] > 0].head(2000).assign(customer_id=np.arange(2000))
    theirs = gg_fit.fitted_model.expected_customer_spend(rep).values.ravel()
    ours = P.gamma_gamma_expected_spend(gg_fit.params, rep["frequency"], rep["monetary_value"])
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)
    p, q, v = (gg_fit.params[k] for k in P.GAMMA_GAMMA_PARAMS)
    # Frequency 0 or no usable spend -> the population mean.
    assert P.gamma_gamma_expected_spend(gg_fit.params, [0, 3], [0, -5]).tolist() == pytest.approx(
        [p * v / (q - 1)] * 2
    )


def test_clv_is_discounted_monthly_spend(scorer, sim):
    head = P.prepare_features(sim.head(500))
    base = scorer.score(head)
    undiscounted = P.Scorer(**{**scorer.__dict__, "annual_discount_rate": 0.0}).score(head)
    np.testing.assert_allclose(
        undiscounted["clv_12m"],
        undiscounted["expected_avg_order_value"] * undiscounted["expected_purchases_365d"],
        rtol=1e-9,
    )
    assert (base["clv_12m"] <= undiscounted["clv_12m"] + 1e-12).all()
    # Explicit loop for one customer: month-end discounting at (1.1)^(1/12) - 1 per month.
    x, tx, T = (float(head.iloc[3][c]) for c in ("frequency", "recency", "T"))
    d = 1.1 ** (1 / 12) - 1
    e = [
        float(P.bg_nbd_expected_purchases(scorer.bg_params, m * 365 / 12, x, tx, T))
        for m in range(13)
    ]
    manual = sum((e[m] - e[m - 1]) / (1 + d) ** m for m in range(1, 13))
    assert base.iloc[3]["clv_12m"] == pytest.approx(
        manual * base.iloc[3]["expected_avg_order_value"], rel=1e-9
    )


def test_next_purchase_date_and_bands(scorer):
    feats = pd.DataFrame(
        {
            "customer_id": ["fresh", "regular", "lapsed", "one_time_old"],
            "frequency": [0, 10, 10, 0],
            "recency": [0, 300, 30, 0],
            "T": [0, 305, 700, 700],
            "monetary_value": [0, 20, 20, 0],
        }
    )
    out = scorer.score(P.prepare_features(feats)).set_index("customer_id")
    wait = P.bg_nbd_median_wait(scorer.bg_params, 10, 305)
    assert out.loc["regular", "predicted_next_purchase_date"] == AS_OF + pd.Timedelta(
        days=math.ceil(wait)
    )
    assert out.loc["regular", "churn_risk_band"] == "low"
    assert out.loc["lapsed", "churn_risk_band"] == "lost"
    assert pd.isna(out.loc["lapsed", "predicted_next_purchase_date"])  # lost -> no date
    # A one-time buyer from two years ago: BG/NBD says alive (p_alive = 1), but the median
    # wait is far beyond a year, so no date.
    assert out.loc["one_time_old", "p_alive"] == 1.0
    assert pd.isna(out.loc["one_time_old", "predicted_next_purchase_date"])
    assert (out["as_of_date"] == AS_OF).all()


def test_churn_thresholds_from_seed_rows_and_validation():
    seed = pd.DataFrame(
        {"band": ["low", "medium", "high", "lost"], "min_p_alive": [0.8, 0.5, 0.2, 0.0]}
    )
    th = P.churn_thresholds_from_rows(seed)
    assert th == {"low": 0.8, "medium": 0.5, "high": 0.2}
    bands = P.churn_band([0.9, 0.8, 0.6, 0.2, 0.1], th)
    assert bands.tolist() == ["low", "low", "medium", "high", "lost"]
    with pytest.raises(ValueError, match="low >= medium >= high"):
        P.validate_churn_thresholds({"low": 0.3, "medium": 0.5, "high": 0.1})
    with pytest.raises(ValueError, match="exactly the bands"):
        P.validate_churn_thresholds({"low": 0.3, "medium": 0.2})


def test_batch_scoring_equals_single_batch(scorer, sim):
    head = sim.head(1000)
    whole = P.score_customers(head, scorer, batch_size=1_000_000)
    batched = P.score_customers(head, scorer, batch_size=7)
    pd.testing.assert_frame_equal(whole, batched)
    assert list(whole.columns) == list(P.PREDICTION_COLUMNS)
    assert len(list(P.iter_predictions(head, scorer, batch_size=300))) == 4
    # Streaming from a DuckDB relation gives the same rows.
    con = duckdb.connect()
    con.register("feats", head)
    streamed = P.score_customers(
        con.sql("select * from feats order by customer_id"), scorer, batch_size=128
    )
    pd.testing.assert_frame_equal(whole, streamed)


def test_thin_customers_get_values_not_nan(scorer):
    thin = pd.DataFrame(
        {
            "customer_id": range(7),
            "frequency": [0, 0, 1, 1, 2, 300, 0],
            "recency": [0, 0, 1, 1000, 5, 999, 0],
            "T": [0, 5000, 1, 1000, 5, 1000, 1e-9],
            "monetary_value": [0, np.nan, 0, -3, 1e6, 25, 0],
        }
    )
    for s in (
        scorer,
        P.Scorer(**{**scorer.__dict__, "gg_params": None, "mean_spend": 33.0}),
        P.Scorer(as_of_date=AS_OF, mean_frequency=1.5, mean_T=200.0, mean_spend=33.0),
        P.Scorer(as_of_date=AS_OF),
    ):
        out = P.score_customers(thin, s)
        numeric = out.select_dtypes("number")
        assert np.isfinite(numeric.to_numpy()).all(), (s.method, out)
        assert out["p_alive"].between(0, 1).all() and out["p_no_purchase_90d"].between(0, 1).all()
        assert (out["expected_purchases_30d"] <= out["expected_purchases_90d"] + 1e-12).all()
        assert (out["expected_purchases_90d"] <= out["expected_purchases_365d"] + 1e-12).all()
        assert out["churn_risk_band"].isin(P.CHURN_BANDS).all()
        assert (out["prediction_method"] == s.method).all()
    assert P.Scorer(**{**scorer.__dict__, "gg_params": None}).method == "bg_nbd_mean_spend"
    # Without Gamma-Gamma the spend is shrunk to the population mean: (x m + mbar) / (x + 1).
    no_gg = P.score_customers(
        thin, P.Scorer(**{**scorer.__dict__, "gg_params": None, "mean_spend": 33.0})
    )
    assert no_gg["expected_avg_order_value"].tolist()[4:6] == pytest.approx(
        [(2 * 1e6 + 33) / 3, (300 * 25 + 33) / 301]
    )
    assert no_gg["expected_avg_order_value"].tolist()[:4] == pytest.approx([33.0] * 4)


def test_too_few_customers_use_the_naive_fallback():
    few = P.simulate_bg_nbd(50, TRUTH, gg_params=GG_TRUTH, seed=9)
    run = P.run_predictions(few, AS_OF)
    assert run.bg_fit is None and run.gg_fit is None
    # No parameters, but one status row per model with the reason.
    assert run.params["model"].tolist() == ["bg_nbd", "gamma_gamma"]
    assert run.params["parameter"].isna().all() and run.params["value"].isna().all()
    assert set(run.params["fit_status"]) == {"not_attempted"}
    assert "50 customers with a purchase" in run.params["status_reason"].iloc[0]
    out = run.predictions
    assert len(out) == 50 and (out["prediction_method"] == "naive_rate").all()
    assert np.isfinite(out.select_dtypes("number").to_numpy()).all()
    assert P.score_customers(few.head(0), run.scorer).empty  # no customers, no rows, no crash


def test_run_predictions_and_params_table(sim, bg_fit, gg_fit):
    params = P.model_params_table(bg_fit, gg_fit)
    assert list(params.columns) == list(P.PARAM_COLUMNS)
    assert params[["model", "parameter"]].values.tolist() == [
        ["bg_nbd", "r"],
        ["bg_nbd", "alpha"],
        ["bg_nbd", "a"],
        ["bg_nbd", "b"],
        ["gamma_gamma", "p"],
        ["gamma_gamma", "q"],
        ["gamma_gamma", "v"],
    ]
    assert params["converged"].all() and (params["as_of_date"] == AS_OF).all()
    assert (
        params.loc[params["model"] == "bg_nbd", "log_likelihood"] == bg_fit.log_likelihood
    ).all()
    assert set(params["time_unit"]) == {"day"}
    # The tables land in DuckDB with the intended types.
    con = duckdb.connect()
    con.register("params_df", params)
    types = dict(con.sql("describe select * from params_df").fetchall()[i][:2] for i in range(9))
    assert types["as_of_date"] == "DATE" and types["converged"] == "BOOLEAN"


def test_read_customer_features_from_the_mart():
    con = duckdb.connect()
    con.execute("create schema marts")
    con.execute("""
        create table marts.customer_features as select * from (values
            ('c1', date '2025-01-01', 0, 0, 10, null),
            ('c2', date '2024-08-01', 3, 70, 140, 25.0),
            ('prospect', null, 0, 0, 0, 0)
        ) t(customer_id, first_purchase_date, frequency, recency_days, tenure_days,
            avg_repeat_purchase_day_value)
    """)
    day = P.read_customer_features(con)
    assert day["customer_id"].tolist() == ["c1", "c2"]
    assert day.loc[1, ["frequency", "recency", "T", "monetary_value"]].tolist() == [3, 70, 140, 25]
    assert day.loc[0, "monetary_value"] == 0
    # Days in, converted once by whoever applies the time unit.
    assert P.prepare_features(day, time_unit="week").loc[1, "T"] == pytest.approx(20.0)
