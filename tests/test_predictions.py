"""Tests of the purchase-prediction logic (the customer_warehouse.predictions package): the
likelihoods, the simulator, the fits and the summary of transactions. Validation and failed
fits are in tests/test_prediction_validation.py, the scoring formulas in
tests/test_prediction_scoring.py, the backtest in tests/test_prediction_backtest.py; the
population and the fits they share are fixtures of tests/prediction_helpers.py.

Why these tests: a CLV model can look plausible and still be wrong, so every number is checked
against something independent - parameter recovery on data simulated from known parameters,
agreement between pymc-marketing's fit and our own scipy maximum likelihood, the closed-form
predictions against a brute-force Monte Carlo of the BG/NBD process, and a calibration/holdout
backtest on simulated purchase days.

Tolerances (stated here once):
* recovery: every parameter within 4 standard errors (observed information) of the truth and
  within 10 % (r, alpha, p, q, v) or 25 % (a, b: the dropout parameters are the least precise)
  on 20 000 simulated customers;
* pymc-marketing MAP vs independent MLE: relative 1e-3 per parameter, and the log-likelihood at
  pymc's parameters >= the independent optimum - 1e-3 (absolute, on 20 000 customers);
* closed forms vs Monte Carlo: within 4 Monte Carlo standard errors + 1e-3;
* backtest on simulated purchase days: aggregate holdout repeat purchases within 10 %."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from customer_warehouse import predictions as P

from .prediction_helpers import AS_OF, GG_TRUTH, N_SIM, TRUTH

# ------------------------------------------------------------------------------------------
# Likelihood and simulator
# ------------------------------------------------------------------------------------------


def test_simulator_agrees_with_pymc_marketing_generator():
    """Our vectorised simulator and pymc-marketing's per-customer event loop are one process.

    Same T for every customer in both; compare the frequency distribution (mean and share of
    one-time buyers, two-sample z < 4) and recency / T among repeat buyers (KS test).
    """
    import pymc as pm
    from pymc_marketing.clv.distributions import BetaGeoNBD

    n = 4000
    ours = P.simulate_bg_nbd(n, TRUTH, max_T=365.0, seed=5)
    T = ours["T"].to_numpy()
    theirs = pm.draw(
        BetaGeoNBD.dist(a=TRUTH["a"], b=TRUTH["b"], r=TRUTH["r"], alpha=TRUTH["alpha"], T=T),
        random_seed=6,
    )
    ours_x, theirs_x = ours["frequency"].to_numpy(), theirs[:, 1]
    for f in (lambda v: v, lambda v: (v == 0).astype(float)):
        a_, b_ = f(ours_x), f(theirs_x)
        se = math.sqrt(a_.var() / n + b_.var() / n)
        assert abs(a_.mean() - b_.mean()) < 4 * se, (a_.mean(), b_.mean(), se)
    ours_ratio = (ours["recency"] / ours["T"])[ours_x > 0]
    theirs_ratio = (theirs[:, 0] / T)[theirs_x > 0]
    assert stats.ks_2samp(ours_ratio, theirs_ratio).pvalue > 0.001


def test_independent_log_likelihood_equals_pymc_marketing_logp(sim, bg_fit, gg_fit):
    """Our ln A1..A4 likelihood and pymc-marketing's model logp agree at arbitrary parameters."""
    point_bg = {"r": 0.4, "alpha": 12.0, "a": 1.3, "b": 0.7}
    logp = bg_fit.fitted_model.model.compile_logp(jacobian=False)
    ours = P.bg_nbd_log_likelihood(point_bg, sim["frequency"], sim["recency"], sim["T"])
    theirs = logp({f"{k}_log__": np.log(v) for k, v in point_bg.items()})
    assert ours == pytest.approx(float(theirs), rel=1e-10)

    point_gg = {"p": 3.0, "q": 2.5, "v": 40.0}
    logp_gg = gg_fit.fitted_model.model.compile_logp(jacobian=False)
    rep = sim[(sim["frequency"] > 0) & (sim["monetary_value"] > 0)]
    ours_gg = P.gamma_gamma_log_likelihood(point_gg, rep["frequency"], rep["monetary_value"])
    theirs_gg = logp_gg({f"{k}_log__": np.log(v) for k, v in point_gg.items()})
    assert ours_gg == pytest.approx(float(theirs_gg), rel=1e-10)


def test_analytic_gradients_match_finite_differences(sim):
    d = P._BgData(sim["frequency"], sim["recency"], sim["T"], None)
    lt = np.log([0.4, 12.0, 1.3, 0.7])
    _, grad = P._bg_ll_grad(lt, d)
    h = 1e-6
    for j in range(4):
        e = np.zeros(4)
        e[j] = h
        numeric = (P._bg_ll_grad(lt + e, d)[0] - P._bg_ll_grad(lt - e, d)[0]) / (2 * h)
        assert grad[j] == pytest.approx(numeric, rel=1e-5, abs=1e-3)
    rep = sim[sim["frequency"] > 0]
    g = P._GgData(rep["frequency"], rep["monetary_value"], None)
    lt = np.log([3.0, 2.5, 40.0])
    _, grad = P._gg_ll_grad(lt, g)
    for j in range(3):
        e = np.zeros(3)
        e[j] = h
        numeric = (P._gg_ll_grad(lt + e, g)[0] - P._gg_ll_grad(lt - e, g)[0]) / (2 * h)
        assert grad[j] == pytest.approx(numeric, rel=1e-5, abs=1e-3)


def test_grouped_weights_give_the_same_likelihood(sim):
    """Weights (used to fit unique rows) are exact: duplicating rows = weight 2."""
    head = sim.head(500)
    doubled = pd.concat([head, head])
    ll_doubled = P.bg_nbd_log_likelihood(
        TRUTH, doubled["frequency"], doubled["recency"], doubled["T"]
    )
    ll_weighted = P.bg_nbd_log_likelihood(
        TRUTH, head["frequency"], head["recency"], head["T"], weights=np.full(500, 2.0)
    )
    assert ll_weighted == pytest.approx(ll_doubled, rel=1e-12)


# ------------------------------------------------------------------------------------------
# Fitting
# ------------------------------------------------------------------------------------------


def test_bg_nbd_recovers_true_parameters(bg_fit):
    assert bg_fit.converged
    assert bg_fit.customers_used == N_SIM
    se = bg_fit.diagnostics["std_errors"]
    for name, truth in TRUTH.items():
        got = bg_fit.params[name]
        assert abs(got - truth) < 4 * se[name], (name, got, truth, se[name])
        assert got == pytest.approx(truth, rel=0.25 if name in ("a", "b") else 0.10), name


def test_gamma_gamma_recovers_true_parameters(gg_fit, sim):
    assert gg_fit.converged
    assert gg_fit.customers_used == int(
        ((sim["frequency"] > 0) & (sim["monetary_value"] > 0)).sum()
    )
    se = gg_fit.diagnostics["std_errors"]
    for name, truth in GG_TRUTH.items():
        got = gg_fit.params[name]
        assert abs(got - truth) < 4 * se[name], (name, got, truth, se[name])
        assert got == pytest.approx(truth, rel=0.10), name


def test_pymc_marketing_agrees_with_independent_mle(bg_fit, bg_mle, gg_fit, sim):
    assert bg_mle.converged and bg_mle.method == "scipy_mle"
    for name in P.BG_NBD_PARAMS:
        assert bg_fit.params[name] == pytest.approx(bg_mle.params[name], rel=1e-3), name
    # pymc's optimum is at least as good as ours, up to a tiny epsilon.
    assert bg_fit.log_likelihood >= bg_mle.log_likelihood - 1e-3
    # ... and not better by more than the epsilon either (both are the maximum).
    assert bg_fit.log_likelihood <= bg_mle.log_likelihood + 1e-3

    gg_mle = P.fit_gamma_gamma_mle(sim)
    for name in P.GAMMA_GAMMA_PARAMS:
        assert gg_fit.params[name] == pytest.approx(gg_mle.params[name], rel=1e-3), name
    assert gg_fit.log_likelihood >= gg_mle.log_likelihood - 1e-3


def test_time_unit_week_rescales_alpha_only(sim, bg_mle):
    week = P.fit_bg_nbd_mle(sim, time_unit="week")
    assert week.time_unit == "week"
    assert week.params["alpha"] == pytest.approx(bg_mle.params["alpha"] / 7, rel=1e-4)
    for name in ("r", "a", "b"):
        assert week.params[name] == pytest.approx(bg_mle.params[name], rel=1e-4)


def test_predictions_do_not_depend_on_the_time_unit(sim, bg_fit, gg_fit):
    week_params = {**bg_fit.params, "alpha": bg_fit.params["alpha"] / 7}
    day = P.Scorer(as_of_date=AS_OF, bg_params=bg_fit.params, gg_params=gg_fit.params)
    week = P.Scorer(
        as_of_date=AS_OF, time_unit="week", bg_params=week_params, gg_params=gg_fit.params
    )
    head = sim.head(2000)
    a = P.score_customers(head, day)
    b = P.score_customers(head, week)
    num = a.select_dtypes("number").columns
    np.testing.assert_allclose(a[num].to_numpy(), b[num].to_numpy(), rtol=1e-8, atol=1e-12)
    assert (
        a["predicted_next_purchase_date"].isna() == b["predicted_next_purchase_date"].isna()
    ).all()


@pytest.mark.slow
def test_mcmc_gives_intervals_around_the_map_estimate(sim, bg_fit):
    small = sim.sample(3000, random_state=1)
    fit = P.fit_bg_nbd(small, "mcmc", mcmc_kwargs={"draws": 300, "tune": 300, "chains": 2})
    assert fit.method == "mcmc" and fit.intervals is not None
    assert fit.converged, fit.diagnostics
    for name in ("r", "alpha"):
        lo, hi = fit.intervals[name]
        assert lo < fit.params[name] < hi
        assert lo < TRUTH[name] < hi, (name, lo, hi)


def test_summarize_transactions_uses_purchase_days():
    tx = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "a", "b"],
            "purchase_date": ["2024-01-01", "2024-01-01", "2024-01-11", "2024-01-21", "2024-01-05"],
            "value": [10.0, 5.0, 20.0, 40.0, 7.0],
        }
    )
    f = P.summarize_transactions(tx, "2024-01-31").set_index("customer_id")
    assert f.loc["a"].tolist() == [2, 20, 30, 30.0]  # 3 days; repeat days 20 and 40
    assert f.loc["b"].tolist() == [0, 0, 26, 0.0]
    early = P.summarize_transactions(tx, "2024-01-11").set_index("customer_id")
    assert early.loc["a"].tolist() == [1, 10, 10, 20.0]
    with pytest.raises(ValueError, match="after calibration_end"):
        P.backtest(tx, "2024-01-31", "2024-01-01")


def test_summarize_transactions_agrees_with_rfm_summary():
    """The own summary keeps its arithmetic on purpose (customer_warehouse/predictions/summary.py)
    but gives pymc-marketing's rfm_summary numbers: frequency, recency and T exactly, the
    average repeat spend to floating-point precision."""
    from pymc_marketing.clv.utils import rfm_summary

    rng = np.random.default_rng(3)
    n = 4000
    tx = pd.DataFrame(
        {
            "customer_id": rng.integers(0, 500, n),
            "purchase_date": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(rng.integers(0, 400, n), unit="D"),
            "value": rng.gamma(2.0, 30.0, n).round(2),
        }
    )
    ours = P.summarize_transactions(tx, "2024-12-31")
    theirs = rfm_summary(
        tx, "customer_id", "purchase_date", "value", observation_period_end="2024-12-31"
    ).sort_values("customer_id", ignore_index=True)
    assert ours["customer_id"].tolist() == theirs["customer_id"].tolist()
    for column in ("frequency", "recency", "T"):
        assert ours[column].tolist() == theirs[column].tolist()
    np.testing.assert_allclose(ours["monetary_value"], theirs["monetary_value"], atol=1e-9)
