"""Gamma-Gamma (Fader, Hardie and Lee 2005b; Fader and Hardie 2013): spend per purchase day ->
``expected_avg_order_value``.

Reads a prepared feature frame (repeat buyers with a positive average spend, ``_gg_input``);
writes no table. Fitting is pymc-marketing's ``GammaGammaModel`` (``fit_gamma_gamma``). The
hand-written likelihood and its gradient stay for the same reasons as the BG/NBD's (module
``beta_geo``): convergence in standard errors, the ``log_likelihood`` column and the scipy
cross-check ``fit_gamma_gamma_mle``. ``gamma_gamma_expected_spend`` is the closed form at point
parameters, also for customers the likelihood cannot use (x = 0 or m <= 0: population mean).

* Expected average order value (Gamma-Gamma, Fader and Hardie 2013 eq. 5):
  E[M | x, m] = (q - 1) / (p x + q - 1) * p v / (q - 1) + p x / (p x + q - 1) * m.
  For x = 0 (and for customers with a non-positive or missing average spend, which the
  Gamma-Gamma likelihood cannot use) the weight on m is 0, i.e. the population mean p v / (q - 1).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from customer_warehouse.predictions import estimation
from customer_warehouse.predictions.contract import (
    GAMMA_GAMMA_PARAMS,
    FitError,
    FitMethod,
    FitResult,
    TimeUnit,
    _arr,
    prepare_features,
)

#: Why a Gamma-Gamma fit is impossible (no usable customer).
_NO_SPEND = (
    "Gamma-Gamma cannot be fitted: no customer has a repeat purchase with a positive "
    "average spend; check avg_repeat_purchase_day_value in marts.customer_features"
)


class _GgData:
    def __init__(self, x: np.ndarray, m: np.ndarray, w: np.ndarray | None):
        self.x = np.asarray(x, dtype="float64")
        self.m = np.asarray(m, dtype="float64")
        self.w = None if w is None else np.asarray(w, dtype="float64")
        self.log_x = np.log(self.x)
        self.log_m = np.log(self.m)
        self.xm = self.x * self.m
        self.n = float(self.x.size if self.w is None else self.w.sum())

    def total(self, values: np.ndarray) -> float:
        return float(values.sum() if self.w is None else values @ self.w)


def _gg_ll_i(theta: np.ndarray, d: _GgData) -> np.ndarray:
    p, q, v = theta
    px = p * d.x
    return (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(v)
        + (px - 1.0) * d.log_m
        + px * d.log_x
        - (px + q) * np.log(v + d.xm)
    )


def _gg_ll_grad(log_theta: np.ndarray, d: _GgData) -> tuple[float, np.ndarray]:
    """Total Gamma-Gamma log-likelihood and its gradient with respect to log(p, q, v)."""
    theta = np.exp(log_theta)
    p, q, v = theta
    px = p * d.x
    log_vxm = np.log(v + d.xm)
    dig_pxq = special.digamma(px + q)
    g_p = d.x * (dig_pxq - special.digamma(px) + d.log_m + d.log_x - log_vxm)
    g_q = dig_pxq - special.digamma(q) + np.log(v) - log_vxm
    g_v = q / v - (px + q) / (v + d.xm)
    grad = np.array([d.total(g) for g in (g_p, g_q, g_v)]) * theta
    return d.total(_gg_ll_i(theta, d)), grad


def gamma_gamma_log_likelihood(
    params: Mapping[str, float],
    frequency: Any,
    monetary_value: Any,
    *,
    weights: Any = None,
    per_customer: bool = False,
) -> float | np.ndarray:
    """Gamma-Gamma log-likelihood of the mean repeat spend m of x repeat purchase days.

    The x spends are Gamma(p, nu), so their mean is Gamma(p x, x nu); nu ~ Gamma(q, v).
    Integrating nu out: LL = lnG(px+q) - lnG(px) - lnG(q) + q ln v + (px-1) ln m + px ln x
    - (px+q) ln(v + x m). Only customers with x > 0 and m > 0 carry information.
    """
    theta = np.array([float(params[k]) for k in GAMMA_GAMMA_PARAMS])
    d = _GgData(frequency, monetary_value, weights)
    ll_i = _gg_ll_i(theta, d)
    return ll_i if per_customer else d.total(ll_i)


def _gg_input(df: pd.DataFrame) -> pd.DataFrame:
    """Customers the Gamma-Gamma likelihood can use: repeat buyers with a positive spend."""
    keep = (df["frequency"] > 0) & (df["monetary_value"] > 0)
    return df.loc[keep, ["customer_id", "frequency", "monetary_value"]]


def fit_gamma_gamma_mle(
    data: Any,
    *,
    time_unit: TimeUnit = "day",
    as_of_date: date | str | None = None,
    converge_tol_se: float = 0.05,
) -> FitResult:
    """Independent Gamma-Gamma maximum likelihood (scipy), for cross-checks."""
    gg = _gg_input(prepare_features(data, time_unit))
    if gg.empty:
        raise FitError(_NO_SPEND)
    d = _GgData(gg["frequency"], gg["monetary_value"], None)
    mean_m = float(gg["monetary_value"].mean())
    x0 = np.log([1.0, 2.0, mean_m])  # population mean p v / (q - 1) = observed mean
    ll_grad = functools.partial(_gg_ll_grad, d=d)
    return estimation._mle_fit(
        GAMMA_GAMMA, ll_grad, x0, d.n, len(gg), time_unit, as_of_date, converge_tol_se
    )


def fit_gamma_gamma(data: Any, method: FitMethod = "map", **options: Any) -> FitResult:
    """Fit the Gamma-Gamma spend model with ``pymc_marketing.clv.GammaGammaModel``.

    Uses only repeat buyers with a positive average spend (the model's likelihood is undefined
    for x = 0 or m <= 0). Flat priors are pymc-marketing's default for this model, so MAP is the
    MLE; ``method="mcmc"`` as in ``fit_bg_nbd``.

    ``options``: ``time_unit`` (default "day"), ``as_of_date``, ``mcmc_kwargs``,
    ``converge_tol_se`` (0.05), as ``estimation.fit_features`` takes them.
    """
    return estimation.fit_features(GAMMA_GAMMA, data, method, **options)


def _gg_fit_input(df: pd.DataFrame) -> pd.DataFrame:
    """``_gg_input``, or ``FitError`` when nobody is left."""
    gg = _gg_input(df)
    if gg.empty:
        raise FitError(_NO_SPEND)
    return gg


def _gg_likelihood(frame: pd.DataFrame) -> estimation.LikelihoodGradient:
    return functools.partial(
        _gg_ll_grad, d=_GgData(frame["frequency"], frame["monetary_value"], None)
    )


GAMMA_GAMMA = estimation.ModelFamily(
    "gamma_gamma",
    GAMMA_GAMMA_PARAMS,
    "GammaGammaModel",
    ("frequency", "monetary_value"),
    _gg_likelihood,
    _gg_fit_input,
)
#: ``fit_gamma_gamma`` on features already prepared.
_fit_gamma_gamma = functools.partial(estimation.fit_family, GAMMA_GAMMA)


def gamma_gamma_expected_spend(params: Mapping[str, float], frequency, monetary_value):
    """E[spend per purchase day | x, m] (Fader-Hardie 2013 eq. 5); population mean if x = 0.

    Customers with a non-positive average spend are treated as x = 0 (the likelihood could not
    use them), so they also get the population mean p v / (q - 1).
    """
    p, q, v = (float(params[k]) for k in GAMMA_GAMMA_PARAMS)
    x, m = _arr(frequency), _arr(monetary_value)
    usable = (x > 0) & (m > 0)
    x_eff = np.where(usable, x, 0.0)
    m_eff = np.where(usable, m, 0.0)
    weight = p * x_eff / (p * x_eff + q - 1.0)
    return (1.0 - weight) * (p * v / (q - 1.0)) + weight * m_eff
