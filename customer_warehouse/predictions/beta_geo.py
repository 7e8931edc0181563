"""BG/NBD (Fader, Hardie and Lee 2005): repeat purchases and dropout -> ``p_alive``, expected
purchases, P(no purchase), next purchase.

Reads a prepared feature frame (``contract.prepare_features``); writes no table. Fitting is
pymc-marketing's ``BetaGeoModel`` (``fit_bg_nbd``). Two hand-written parallels stay, on purpose:

* the log-likelihood with its analytic gradient (``_bg_ll_grad``): pymc-marketing exposes
  neither a per-customer likelihood at given parameters nor its gradient, and both are needed
  to check convergence in standard errors (``estimation._diagnostics``), to fill
  ``log_likelihood`` the same way for MAP and MCMC, and for ``fit_bg_nbd_mle``, the
  independent scipy fit the tests cross-check pymc against;
* the closed-form predictions (``bg_nbd_p_alive`` ...): scoring runs at point parameters on
  batches of up to 200k rows with plain numpy, also for the fallback ladder where no fitted
  pymc model exists; the library's methods evaluate over posterior draws with xarray and need
  the fitted model object. Its ``expected_probability_no_purchase`` (0.19.2) also adds a
  dropout branch for one-time buyers that the model does not have (see below).

Formulas (x = frequency, t_x = recency, T, all in the time unit; t = horizon in the time unit)
------------------------------------------------------------------------------------------------
* P(alive) = 1 / (1 + [x > 0] * a / (b + x - 1) * ((alpha + T) / (alpha + t_x))^(r + x))
  (Fader, Hardie and Lee 2008, note 021). BG/NBD lets customers drop out only right after a
  repeat purchase, so P(alive) = 1 for one-time buyers (x = 0) - a property of the model, not a
  bug; their expected purchases still shrink with T because the posterior rate does.
* E[X(t) | history] = (a + b + x - 1) / (a - 1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x) *
  2F1(r + x, b + x; a + b + x - 1; z)] * P(alive), z = t / (alpha + T + t)  (FHL 2005 eq. 10).
  Evaluated through Euler's transformation, ((alpha+T)/(alpha+T+t))^(r+x) * 2F1(...) =
  (1 - z)^(a - 1) * 2F1(a + b - 1 - r, a - 1; a + b + x - 1; z), whose parameters stay small
  for heavy buyers, so scipy's hyp2f1 neither overflows nor cancels. At a = 1 the expression is
  0/0; ``a`` is then nudged by 1e-6 (relative error ~1e-10).
* P(X(t) = 0 | history) = (1 - P(alive)) + P(alive) * ((alpha + T) / (alpha + T + t))^(r + x).
  Derivation: a dead customer never buys. Given alive, the posterior of the purchase rate is
  Gamma(shape r + x, rate alpha + T) (the alive branch of the likelihood is
  (1-p)^x lambda^x e^(-lambda T)), and an alive customer drops out only after a purchase, so "no
  purchase in (T, T+t]" is "no Poisson event", probability e^(-lambda t). Averaging e^(-lambda t)
  over that Gamma gives ((alpha+T)/(alpha+T+t))^(r+x). (pymc-marketing 0.19.2's
  ``expected_probability_no_purchase`` agrees for x > 0 but adds a dropout branch for x = 0
  that the model does not have; the tests check ours against a Monte Carlo of the process.)
* Next purchase: the median waiting time to the next purchase given alive solves
  ((alpha+T)/(alpha+T+w))^(r+x) = 1/2, so w = (alpha + T) * (2^(1/(r+x)) - 1). The median is used
  because the mean, (alpha+T)/(r+x-1), is infinite when r + x <= 1 (every one-time buyer with
  r < 1). ``predicted_next_purchase_date`` = as-of date + ceil(w in days) (at least 1 day); NULL
  when P(alive) is below the ``high`` band threshold (band ``lost``) or when w is beyond
  ``next_purchase_horizon_days`` (default 365: "no purchase expected within a year").
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from customer_warehouse.predictions.contract import (
    BG_NBD_PARAMS,
    GAMMA_GAMMA_PARAMS,
    FitMethod,
    FitResult,
    TimeUnit,
    _arr,
    prepare_features,
)
from customer_warehouse.predictions.estimation import (
    LikelihoodGradient,
    ModelFamily,
    _mle_fit,
    fit_family,
    fit_features,
)

# --------------------------------------------------------------------------------------------
# Likelihood (numpy/scipy): log-likelihood column, convergence check, scipy cross-check fit
# --------------------------------------------------------------------------------------------


class _BgData:
    """BG/NBD sufficient data; gammaln/digamma of (param + x) are computed on unique x only."""

    def __init__(self, x: np.ndarray, tx: np.ndarray, T: np.ndarray, w: np.ndarray | None):
        self.x = np.asarray(x, dtype="float64")
        self.tx = np.asarray(tx, dtype="float64")
        self.T = np.asarray(T, dtype="float64")
        self.w = None if w is None else np.asarray(w, dtype="float64")
        self.ux, self.inv = np.unique(self.x, return_inverse=True)
        self.pos = self.x > 0
        # b + x - 1 is only used where x > 0; use x = 1 elsewhere so the log stays finite.
        self.x1 = np.where(self.pos, self.x, 1.0)
        self.n = float(self.x.size if self.w is None else self.w.sum())

    def total(self, values: np.ndarray) -> float:
        return float(values.sum() if self.w is None else values @ self.w)


def _bg_terms(theta: np.ndarray, d: _BgData) -> tuple[np.ndarray, ...]:
    r, alpha, a, b = theta
    ux = d.ux
    lnA1_u = special.gammaln(r + ux) - special.gammaln(r) + r * np.log(alpha)
    lnA2_u = (
        special.gammaln(a + b)
        + special.gammaln(b + ux)
        - special.gammaln(b)
        - special.gammaln(a + b + ux)
    )
    log_aT = np.log(alpha + d.T)
    log_atx = np.log(alpha + d.tx)
    rx = r + d.x
    lnA3 = -rx * log_aT
    lnA4 = np.where(d.pos, np.log(a) - np.log(b + d.x1 - 1.0) - rx * log_atx, -np.inf)
    return lnA1_u, lnA2_u, lnA3, lnA4, log_aT, log_atx, rx


def _bg_ll_grad(log_theta: np.ndarray, d: _BgData) -> tuple[float, np.ndarray]:
    """Total BG/NBD log-likelihood and its gradient with respect to log(r, alpha, a, b)."""
    theta = np.exp(log_theta)
    r, alpha, a, b = theta
    lnA1_u, lnA2_u, lnA3, lnA4, log_aT, log_atx, rx = _bg_terms(theta, d)
    lse = np.logaddexp(lnA3, lnA4)
    ll_i = lnA1_u[d.inv] + lnA2_u[d.inv] + lse
    w4 = np.exp(lnA4 - lse)  # share of the "dropped out after the last purchase" branch
    w3 = 1.0 - w4
    ux = d.ux
    dig = special.digamma
    g_r = (dig(r + ux) - dig(r) + np.log(alpha))[d.inv] - w3 * log_aT - w4 * log_atx
    g_alpha = r / alpha - rx * (w3 / (alpha + d.T) + w4 / (alpha + d.tx))
    g_a = (dig(a + b) - dig(a + b + ux))[d.inv] + w4 / a
    g_b = (dig(a + b) + dig(b + ux) - dig(b) - dig(a + b + ux))[d.inv] - w4 / (b + d.x1 - 1.0)
    grad = np.array([d.total(g) for g in (g_r, g_alpha, g_a, g_b)]) * theta
    return d.total(ll_i), grad


def bg_nbd_log_likelihood(
    params: Mapping[str, float],
    frequency: Any,
    recency: Any,
    T: Any,
    *,
    weights: Any = None,
    per_customer: bool = False,
) -> float | np.ndarray:
    """BG/NBD log-likelihood, FHL (2005) in the hypergeometric-free ln A1..A4 form.

    LL_i = ln A1 + ln A2 + ln(exp(ln A3) + [x > 0] exp(ln A4)) with
    ln A1 = lnG(r+x) - lnG(r) + r ln(alpha); ln A2 = lnG(a+b) + lnG(b+x) - lnG(b) - lnG(a+b+x);
    ln A3 = -(r+x) ln(alpha+T); ln A4 = ln(a) - ln(b+x-1) - (r+x) ln(alpha+t_x).
    The sum uses logaddexp, so heavy buyers cannot overflow (FH note 027's #NUM! problem).
    """
    theta = np.array([float(params[k]) for k in BG_NBD_PARAMS])
    d = _BgData(frequency, recency, T, weights)
    lnA1_u, lnA2_u, lnA3, lnA4, *_ = _bg_terms(theta, d)
    ll_i = lnA1_u[d.inv] + lnA2_u[d.inv] + np.logaddexp(lnA3, lnA4)
    return ll_i if per_customer else d.total(ll_i)


def _bg_start(x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """A start that lands the mean purchase rate r/alpha on the observed rate."""
    rate = max(float(x.sum()) / max(float(T.sum()), 1e-9), 1e-6)
    return np.log([1.0, 1.0 / rate, 1.0, 1.0])


def fit_bg_nbd_mle(
    data: Any,
    *,
    time_unit: TimeUnit = "day",
    as_of_date: date | str | None = None,
    start: Mapping[str, float] | None = None,
    converge_tol_se: float = 0.05,
) -> FitResult:
    """Independent BG/NBD maximum likelihood with scipy (L-BFGS-B on log parameters).

    Exists to check pymc-marketing (and to fit where pymc is not wanted). Unique
    (frequency, recency, T) rows are grouped with weights, which is exact and much faster on
    integer-day data.
    """
    df = prepare_features(data, time_unit)
    grouped = df.groupby(["frequency", "recency", "T"], sort=False).size().reset_index()
    d = _BgData(grouped["frequency"], grouped["recency"], grouped["T"], grouped[0].to_numpy())
    x0 = (
        np.log([float(start[k]) for k in BG_NBD_PARAMS])
        if start
        else _bg_start(df["frequency"].to_numpy(), df["T"].to_numpy())
    )
    ll_grad = functools.partial(_bg_ll_grad, d=d)
    return _mle_fit(BG_NBD, ll_grad, x0, d.n, len(df), time_unit, as_of_date, converge_tol_se)


def fit_bg_nbd(data: Any, method: FitMethod = "map", **options: Any) -> FitResult:
    """Fit the BG/NBD with ``pymc_marketing.clv.BetaGeoModel`` and flat priors.

    ``method="map"``: maximum likelihood (MAP with HalfFlat priors). ``method="mcmc"``: NUTS
    with the same flat priors; ``params`` are posterior means, ``intervals`` the 94 %
    equal-tailed intervals, and ``fitted_model`` keeps the pymc-marketing object for per-customer
    intervals (``fitted_model.expected_purchases(...)`` over draws).

    ``converged`` for MAP is decided independently of pymc's optimizer: the remaining Newton step
    of this module's likelihood at the returned parameters must be below ``converge_tol_se``
    standard errors (see ``_diagnostics``). For MCMC it means every r-hat < 1.05.

    ``options``: ``time_unit`` (default "day"), ``as_of_date``, ``mcmc_kwargs``,
    ``converge_tol_se`` (0.05), as ``estimation.fit_features`` takes them.
    """
    return fit_features(BG_NBD, data, method, **options)


def _bg_likelihood(frame: pd.DataFrame) -> LikelihoodGradient:
    return functools.partial(
        _bg_ll_grad, d=_BgData(frame["frequency"], frame["recency"], frame["T"], None)
    )


BG_NBD = ModelFamily(
    "bg_nbd", BG_NBD_PARAMS, "BetaGeoModel", ("frequency", "recency", "T"), _bg_likelihood
)
#: ``fit_bg_nbd`` on features already prepared (recency/T in ``time_unit``).
_fit_bg_nbd = functools.partial(fit_family, BG_NBD)


# --------------------------------------------------------------------------------------------
# Closed-form predictions at given parameters
# --------------------------------------------------------------------------------------------


def bg_nbd_p_alive(params: Mapping[str, float], frequency, recency, T) -> np.ndarray:
    """P(alive | x, t_x, T) = 1 / (1 + [x>0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))."""
    r, alpha, a, b = (float(params[k]) for k in BG_NBD_PARAMS)
    x, tx, T = _arr(frequency), _arr(recency), _arr(T)
    x1 = np.where(x > 0, x, 1.0)
    log_odds_dead = (
        np.log(a) - np.log(b + x1 - 1.0) + (r + x) * (np.log(alpha + T) - np.log(alpha + tx))
    )
    return np.where(x > 0, special.expit(-log_odds_dead), 1.0)


def bg_nbd_expected_purchases(
    params: Mapping[str, float], t: Any, frequency, recency, T, p_alive: np.ndarray | None = None
) -> np.ndarray:
    """E[X(t) | x, t_x, T]: expected repeat purchases in (T, T + t] (FHL 2005 eq. 10).

    Uses the Euler-transformed hypergeometric described in the module docstring. ``t`` may be a
    scalar or an array broadcastable to the customers.
    """
    r, alpha, a, b = (float(params[k]) for k in BG_NBD_PARAMS)
    if abs(a - 1.0) < 1e-6:
        a = 1.0 + 1e-6  # the formula is 0/0 at a = 1; see module docstring
    x, T, t = _arr(frequency), _arr(T), _arr(t)
    if p_alive is None:
        p_alive = bg_nbd_p_alive(params, frequency, recency, T)
    log_aT = np.log(alpha + T)
    log_aTt = np.log(alpha + T + t)
    z = t / (alpha + T + t)
    c = a + b + x - 1.0
    hyp = special.hyp2f1(a + b - 1.0 - r, a - 1.0, c, z)
    log_1mz = log_aT - log_aTt
    with np.errstate(invalid="ignore", divide="ignore"):
        bracket = np.where(
            hyp > 0,
            -np.expm1((a - 1.0) * log_1mz + np.log(np.where(hyp > 0, hyp, 1.0))),
            1.0 - np.exp((a - 1.0) * log_1mz) * hyp,
        )
    return np.where(t > 0, c / (a - 1.0) * bracket * p_alive, 0.0)


def bg_nbd_p_no_purchase(
    params: Mapping[str, float], t: Any, frequency, recency, T, p_alive: np.ndarray | None = None
) -> np.ndarray:
    """P(X(t) = 0 | history) = 1 - P(alive) + P(alive) ((alpha+T)/(alpha+T+t))^(r+x)."""
    r, alpha = float(params["r"]), float(params["alpha"])
    x, T, t = _arr(frequency), _arr(T), _arr(t)
    if p_alive is None:
        p_alive = bg_nbd_p_alive(params, frequency, recency, T)
    survive = np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t)))
    return 1.0 - p_alive + p_alive * survive


def bg_nbd_median_wait(params: Mapping[str, float], frequency, T) -> np.ndarray:
    """Median time to the next purchase given alive: (alpha + T) (2^(1/(r+x)) - 1)."""
    r, alpha = float(params["r"]), float(params["alpha"])
    x, T = _arr(frequency), _arr(T)
    with np.errstate(over="ignore"):
        return (alpha + T) * np.expm1(np.log(2.0) / (r + x))


# --------------------------------------------------------------------------------------------
# Simulation (tests, benchmarks, docs)
# --------------------------------------------------------------------------------------------


def simulate_bg_nbd(
    n_customers: int,
    params: Mapping[str, float],
    *,
    max_T: float = 730.0,
    gg_params: Mapping[str, float] | None = None,
    seed: int | np.random.Generator | None = None,
) -> pd.DataFrame:
    """Draw customer summaries (input contract) from a known BG/NBD (+ Gamma-Gamma) process.

    Exact and vectorised: with K ~ Poisson(lambda T) events of an ever-alive customer in (0, T]
    and dropout after the N-th repeat purchase (N ~ Geometric(p)), the observed frequency is
    x = min(K, N), and the x-th of K uniform event times is T * Beta(x, K - x + 1). T is uniform
    on (0, max_T) in the unit of ``alpha``. Spend: nu ~ Gamma(q, rate v) per customer, the mean of
    x Gamma(p, rate nu) spends is Gamma(p x, rate x nu).
    """
    rng = np.random.default_rng(seed)
    r, alpha, a, b = (float(params[k]) for k in BG_NBD_PARAMS)
    lam = rng.gamma(r, 1.0 / alpha, n_customers)
    p = np.clip(rng.beta(a, b, n_customers), 1e-12, 1.0)
    T = rng.uniform(0.0, max_T, n_customers)
    K = rng.poisson(lam * T)
    N = rng.geometric(p)
    x = np.minimum(K, N)
    pos = x > 0
    tx = np.zeros(n_customers)
    tx[pos] = T[pos] * rng.beta(x[pos], K[pos] - x[pos] + 1)
    m = np.zeros(n_customers)
    if gg_params is not None:
        gp, gq, gv = (float(gg_params[k]) for k in GAMMA_GAMMA_PARAMS)
        nu = rng.gamma(gq, 1.0 / gv, n_customers)
        m[pos] = rng.gamma(gp * x[pos], 1.0 / (x[pos] * nu[pos]))
    return pd.DataFrame(
        {
            "customer_id": np.arange(n_customers),
            "frequency": x.astype("float64"),
            "recency": tx,
            "T": T,
            "monetary_value": m,
        }
    )
