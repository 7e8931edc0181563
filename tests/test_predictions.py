"""Tests of the purchase-prediction logic (the customer_warehouse.predictions package).

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
* backtest on simulated purchase days: aggregate holdout repeat purchases within 10 %.

pytensor compiles C code on first use; the pymc-marketing fits live in module-scoped fixtures
so the module compiles each model once (one BG/NBD and one Gamma-Gamma graph, reused by the
backtest and the failed-fit test through pytensor's on-disk cache).
"""

from __future__ import annotations

import math
import warnings
from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from customer_warehouse import predictions as P

TRUTH = {"r": 0.25, "alpha": 30.0, "a": 0.8, "b": 2.5}  # per day
GG_TRUTH = {"p": 6.0, "q": 4.0, "v": 15.0}
AS_OF = date(2024, 6, 30)
N_SIM = 20_000


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
# Fixtures: one simulated population, one pymc-marketing fit of each model.
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> pd.DataFrame:
    return P.simulate_bg_nbd(N_SIM, TRUTH, max_T=730.0, gg_params=GG_TRUTH, seed=11)


@pytest.fixture(scope="module")
def bg_fit(sim) -> P.FitResult:
    return P.fit_bg_nbd(sim, as_of_date=AS_OF)


@pytest.fixture(scope="module")
def gg_fit(sim) -> P.FitResult:
    return P.fit_gamma_gamma(sim, as_of_date=AS_OF)


@pytest.fixture(scope="module")
def bg_mle(sim) -> P.FitResult:
    return P.fit_bg_nbd_mle(sim)


@pytest.fixture(scope="module")
def scorer(bg_fit, gg_fit) -> P.Scorer:
    return P.Scorer(as_of_date=AS_OF, bg_params=bg_fit.params, gg_params=gg_fit.params)


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


# ------------------------------------------------------------------------------------------
# Validation and failed fits
# ------------------------------------------------------------------------------------------


def _fake_fit(model: str, params: dict[str, float], converged: bool = True, **kw) -> P.FitResult:
    return P.FitResult(
        model=model,
        params=params,
        log_likelihood=-1.0,
        customers_used=1000,
        converged=converged,
        time_unit="day",
        method="map",
        **kw,
    )


@pytest.mark.parametrize(
    ("model", "params", "needle"),
    [
        ("bg_nbd", {**TRUTH, "r": 1e-7}, "parameter r"),
        ("bg_nbd", {**TRUTH, "alpha": 1e9}, "parameter alpha"),
        ("bg_nbd", {**TRUTH, "b": float("nan")}, "parameter b is nan"),
        ("gamma_gamma", {**GG_TRUTH, "q": 0.9}, "q = 0.9 <= 1"),
        ("gamma_gamma", {**GG_TRUTH, "v": float("inf")}, "parameter v is inf"),
    ],
)
def test_validate_fit_rejects_absurd_parameters(model, params, needle):
    with pytest.raises(P.FitError, match=needle):
        P.validate_fit(_fake_fit(model, params))


def test_validate_fit_rejects_non_convergence_and_passes_good_fits(bg_fit):
    stopped = _fake_fit("bg_nbd", TRUTH, converged=False, diagnostics={"newton_step_se": 3.2})
    with pytest.raises(P.FitError, match="did not converge.*3.2 standard errors"):
        P.validate_fit(stopped)
    flat = _fake_fit("bg_nbd", TRUTH, converged=False, diagnostics={"negative_definite": False})
    with pytest.raises(P.FitError, match="not identified"):
        P.validate_fit(flat)
    assert P.validate_fit(bg_fit) is bg_fit
    # alpha's bounds follow the time unit: 10 000 days is sane, 10 000 weeks is not.
    weekly = P.FitResult(
        model="bg_nbd",
        params={**TRUTH, "alpha": 10_000.0},
        log_likelihood=-1.0,
        customers_used=1,
        converged=True,
        time_unit="week",
        method="map",
    )
    with pytest.raises(P.FitError, match="alpha"):
        P.validate_fit(weekly)


def test_unfittable_data_raises_fit_error_with_a_reason():
    """Only one-time buyers: r collapses to 0 and a, b are unidentified -> FitError."""
    rng = np.random.default_rng(0)
    n = 400
    only_once = pd.DataFrame(
        {
            "customer_id": np.arange(n),
            "frequency": 0.0,
            "recency": 0.0,
            "T": rng.uniform(0, 700, n).round(),
            "monetary_value": 0.0,
        }
    )
    fit = P.fit_bg_nbd(only_once)
    assert not fit.converged
    with pytest.raises(P.FitError, match=r"parameter r .* nobody buys again"):
        P.validate_fit(fit)
    # run_predictions routes such data to the documented fallback before fitting, and says so
    # in clv_model_params (one status row per model, no parameter values).
    run = P.run_predictions(only_once, AS_OF)
    assert (run.predictions["prediction_method"] == "naive_rate").all()
    assert run.params["fit_status"].tolist() == ["not_attempted", "not_attempted"]
    assert run.params["value"].isna().all()
    assert "nobody has bought on a second day" in run.params["status_reason"].iloc[0]


def test_heavy_tailed_spend_fails_gamma_gamma_check():
    heavy = P.simulate_bg_nbd(3000, TRUTH, gg_params={"p": 3.0, "q": 0.7, "v": 15.0}, seed=2)
    fit = P.fit_gamma_gamma_mle(heavy)
    assert fit.params["q"] < 1
    with pytest.raises(P.FitError, match="infinite"):
        P.validate_fit(fit)


def test_input_contract_violations_are_explained():
    good = pd.DataFrame(
        {
            "customer_id": [1, 2],
            "frequency": [0, 2],
            "recency": [0, 30],
            "T": [10, 60],
            "monetary_value": [0, 12.5],
        }
    )
    assert len(P.prepare_features(good)) == 2
    with pytest.raises(ValueError, match=r"recency > T.*customer_id \[2\]"):
        P.prepare_features(good.assign(recency=[0, 90]))
    with pytest.raises(ValueError, match="duplicates"):
        P.prepare_features(good.assign(customer_id=[1, 1]))
    with pytest.raises(ValueError, match="lack columns"):
        P.prepare_features(good.drop(columns="T"))
    with pytest.raises(ValueError, match="time_unit"):
        P.prepare_features(good, time_unit="month")  # type: ignore[arg-type]
    week = P.prepare_features(good, time_unit="week")
    assert week["T"].tolist() == pytest.approx([10 / 7, 60 / 7])


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
