"""Purchase predictions: BG/NBD (repeat purchases and dropout) and Gamma-Gamma (spend).

Why this module exists
----------------------
Marketing wants to know who is about to buy, who is drifting away and what each customer is
worth. The field's standard answer for non-contractual retail is the BG/NBD model (Fader, Hardie
and Lee 2005) for *when* and *whether* customers buy again, and the Gamma-Gamma model (Fader,
Hardie and Lee 2005b; Fader and Hardie 2013) for *how much* they spend per purchase. The models
are fitted with ``pymc-marketing`` (maintained successor of ``lifetimes``); every prediction is a
closed-form numpy formula at the fitted parameters, so scoring millions of customers is cheap and
never creates per-draw rows. Nothing here imports Dagster: the asset wiring calls these functions.

Input contract (one row per customer who bought at least once, as of the as-of date)
------------------------------------------------------------------------------------
=================  ==========================================================================
``customer_id``    unique key
``frequency``      repeat purchase DAYS = distinct purchase days - 1
``recency``        time from the first to the last purchase day
``T``              time from the first purchase day to the as-of date (``recency <= T``)
``monetary_value`` average spend per repeat purchase day, first purchase day excluded;
                   0 when ``frequency = 0``
=================  ==========================================================================

``read_customer_features`` reads these from the dbt mart ``marts.customer_features`` (columns
``frequency``, ``recency_days``, ``tenure_days``, ``avg_repeat_purchase_day_value``). Recency and
T arrive in days; ``time_unit="day"`` (default) keeps them, ``time_unit="week"`` divides them by
7. The unit only changes the scale of ``alpha`` (and the reported log-likelihood); predictions
are always for calendar horizons in days (30/90/365) and are the same in either unit up to
optimizer precision.

Output: ``marts.customer_predictions`` (``PREDICTION_COLUMNS``; one row per input customer)
-------------------------------------------------------------------------------------------
==============================  ==============================================================
``customer_id``                 from the input
``as_of_date``                  DATE, the as-of date of the features
``p_alive``                     P(customer is still active | history), in [0, 1]
``expected_purchases_30d``      E[repeat purchase days in the next 30 days | history]
``expected_purchases_90d``      same, next 90 days
``expected_purchases_365d``     same, next 365 days
``p_no_purchase_90d``           P(no purchase day in the next 90 days | history)
``expected_avg_order_value``    E[spend per purchase day | history] (Gamma-Gamma)
``clv_12m``                     discounted expected spend over the next 12 months
``predicted_next_purchase_date`` DATE or NULL (see below)
``churn_risk_band``             ``low`` / ``medium`` / ``high`` / ``lost`` from ``p_alive``
``prediction_method``           ``bg_nbd`` / ``bg_nbd_mean_spend`` / ``naive_rate``
==============================  ==============================================================

Dates are pyarrow ``date32`` columns (DuckDB reads them as DATE; NULL where documented). No
numeric column is ever NaN: ``score`` raises instead of writing NaN.

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
* Expected average order value (Gamma-Gamma, Fader and Hardie 2013 eq. 5):
  E[M | x, m] = (q - 1) / (p x + q - 1) * p v / (q - 1) + p x / (p x + q - 1) * m.
  For x = 0 (and for customers with a non-positive or missing average spend, which the
  Gamma-Gamma likelihood cannot use) the weight on m is 0, i.e. the population mean p v / (q - 1).
* clv_12m = sum_{m=1..12} AOV * (E[X(m * L)] - E[X((m - 1) * L)]) / (1 + d)^m with month length
  L = 365/12 days and monthly rate d = (1 + annual_discount_rate)^(1/12) - 1 (default 10 %/year):
  expected purchases per month times expected value, discounted at each month's end (the
  ``lifetimes`` convention). Undiscounted, clv_12m = AOV * expected_purchases_365d.
* churn_risk_band: p_alive >= low -> ``low``; >= medium -> ``medium``; >= high -> ``high``;
  otherwise ``lost``. Thresholds are a dict (``DEFAULT_CHURN_THRESHOLDS``) so they can live in a
  dbt seed (``churn_thresholds_from_rows``).

Fallbacks (documented, never NaN, never a crash)
------------------------------------------------
A model that cannot be fitted meaningfully is a property of the data (a young shop, a shop where
nobody has left yet), not an error: ``run_predictions`` never raises for a data reason. Every
model gets a ``fit_status`` and, unless fitted, a ``status_reason`` (``ModelStatus``), written to
``clv_model_params`` and shown by the Dagster WARN check ``predictions_use_fitted_models``.

* Prospects (never bought) have no row: they are not in the input (``read_customer_features``
  skips rows without tenure). BI left-joins predictions to customers; a missing row = prospect.
  No customer with a purchase at all (e.g. only refunded orders): the predictions table is empty
  (every column, typed), both models ``not_attempted``.
* BG/NBD ``not_attempted`` when the data are below any minimum: fewer than ``min_customers``
  (default 200) customers with a purchase, fewer than ``min_repeat_customers`` (30) repeat
  buyers (customers with two or more purchase days; none at all for a shop of one-time buyers or
  one-day orders), or a history shorter than ``min_history_days`` (90 days from the earliest
  first purchase to the as-of date: on a few weeks the BG/NBD cannot tell a slow buyer from one
  who left, and its estimates run to the edge of the parameter space). The reason lists every
  minimum that is not met, with the numbers.
* BG/NBD ``fallback`` when it was fitted but ``validate_fit`` rejects it (``FitError``): did not
  converge, a parameter outside its sane range (``DEFAULT_BOUNDS`` or the caller's ``bounds``;
  e.g. ``a`` near 0 when nobody shows any sign of dropout), or a non-finite value or
  log-likelihood; likewise when the fitting library fails numerically (``ArithmeticError``,
  ``LinAlgError``). The reason quotes ``validate_fit``'s message (the parameter, its value, the
  range, what to check). Other exceptions (a wrong option, a bug) propagate.
* Either way the predictions use ``prediction_method = 'naive_rate'``: rate lambda_i = (x_i +
  xbar) / (T_i + Tbar) (a Gamma-Poisson posterior mean with one average customer's worth of
  prior), P(alive) = exp(-lambda_i (T_i - t_x)), E[X(t)] = P(alive) lambda_i t, P(X(t)=0) = 1 -
  P(alive) + P(alive) e^(-lambda_i t), median wait ln 2 / lambda_i, AOV = (x m + mbar) / (x + 1)
  with mbar the population mean repeat spend (0 if no one has repeat purchases). Gamma-Gamma is
  then ``not_attempted`` ("the BG/NBD was not fitted").
* BG/NBD fitted, Gamma-Gamma ``not_attempted`` (fewer than ``min_repeat_customers`` repeat buyers
  with a positive spend) or ``fallback`` (rejected by ``validate_fit``, e.g. q <= 1: spend too
  heavy-tailed): ``prediction_method = 'bg_nbd_mean_spend'``, AOV as in the naive fallback.
* Both fitted: ``prediction_method = 'bg_nbd'``.
* Scoring that produces a non-finite number at accepted parameters would be a bug: ``score``
  raises ``FitError`` and nothing is written.

Fit statuses (``FIT_STATUSES``): ``fitted`` (fitted, validated, used for scoring),
``fallback`` (fit attempted and rejected, not used), ``not_attempted`` (below the minimums, or
the model it builds on was not fitted). The minimums and the bounds are parameters of
``run_predictions`` (and options of the Dagster asset).

Known limitation: BG/NBD lets customers drop out only after a repeat purchase, so every
one-time buyer has p_alive = 1 and churn band ``low``, however old the purchase (Fader, Hardie
and Lee's note 021 calls this a shortcoming of the model). Their expected purchases and
``p_no_purchase_90d`` do fall with T, and their next purchase date is NULL once the median wait
passes the horizon; use those (not the band) to rank one-time buyers.

Model parameters: ``marts.clv_model_params`` (``PARAM_COLUMNS``)
-----------------------------------------------------------------
A fitted model has one row per parameter: model (``bg_nbd`` / ``gamma_gamma``), parameter
(r, alpha, a, b / p, q, v), value, time_unit, as_of_date, customers_used, log_likelihood (this
module's independent likelihood function at the fitted values, over the customers used),
converged (MAP: the optimizer stopped less than 0.05 standard errors from the maximum, checked
with our own gradient and Hessian; MCMC: every r-hat < 1.05), fit_method (``map`` / ``mcmc``),
fit_status ``fitted``, status_reason NULL. A model that is not fitted has exactly one row:
parameter, value and log_likelihood NULL, its fit_status (``fallback`` / ``not_attempted``) and
status_reason; for ``fallback`` customers_used, converged and fit_method describe the rejected
fit (its estimates are not written: they are in the reason and the Dagster check's metadata),
for ``not_attempted`` they are 0, NULL, NULL. So every run writes at least one row per model,
and ``select model, fit_status, status_reason from marts.clv_model_params`` always answers "did
the latest run use the models, and if not, why".

Backtest: ``marts.prediction_backtest`` (``BACKTEST_COLUMNS``; see ``backtest``)
------------------------------------------------------------------------------
``run_backtest`` derives the windows from the data (``backtest_windows``): history = as-of date
- first purchase day; holdout = the last min(``holdout_days`` (182), floor(``holdout_fraction``
(1/3) x history)) days up to the as-of date; calibration = everything before. It is skipped
when the holdout would be shorter than ``min_holdout_days`` (28) or the calibration period
shorter than ``min_calibration_days`` (90, the fit's ``min_history_days``): with the defaults a
backtest needs at least 134 days of history (``min_backtest_history_days``). It is also skipped
when there is no purchase, or nobody bought on or before the calibration end. Skipped, the
table has one row: ``backtest_status = 'skipped'``, ``status_reason`` (the history, the
minimums, when it will run), ``holdout_end`` = as-of date, the metric columns NULL. Run, every
row has ``backtest_status = 'ran'``; the calibration fit follows the fallback rules above, so a
young shop's backtest measures the fallback it actually uses (``prediction_method``;
``status_reason`` then holds the calibration fit's reasons, NULL when both models were fitted).
"""

from __future__ import annotations

import functools
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import optimize, special, stats

from customer_warehouse.config import PROJECT_DIR

TimeUnit = Literal["day", "week"]
FitMethod = Literal["map", "mcmc"]

#: Days per time unit.
TIME_UNITS: dict[str, float] = {"day": 1.0, "week": 7.0}
BG_NBD_PARAMS: tuple[str, ...] = ("r", "alpha", "a", "b")
GAMMA_GAMMA_PARAMS: tuple[str, ...] = ("p", "q", "v")
FEATURE_COLUMNS: tuple[str, ...] = ("customer_id", "frequency", "recency", "T", "monetary_value")
#: Minimum p_alive of each band; below ``high`` the band is ``lost``.
DEFAULT_CHURN_THRESHOLDS: dict[str, float] = {"low": 0.70, "medium": 0.40, "high": 0.15}
CHURN_BANDS: tuple[str, ...] = ("low", "medium", "high", "lost")
PREDICTION_METHODS: tuple[str, ...] = ("bg_nbd", "bg_nbd_mean_spend", "naive_rate")
DEFAULT_BATCH_SIZE = 200_000
MONTH_DAYS = 365.0 / 12.0

PREDICTION_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "as_of_date",
    "p_alive",
    "expected_purchases_30d",
    "expected_purchases_90d",
    "expected_purchases_365d",
    "p_no_purchase_90d",
    "expected_avg_order_value",
    "clv_12m",
    "predicted_next_purchase_date",
    "churn_risk_band",
    "prediction_method",
)
PARAM_COLUMNS: tuple[str, ...] = (
    "model",
    "parameter",
    "value",
    "time_unit",
    "as_of_date",
    "customers_used",
    "log_likelihood",
    "converged",
    "fit_method",
    "fit_status",
    "status_reason",
)
#: ``fit_status`` of a model in ``clv_model_params`` (see "Fit statuses" in the docstring).
FIT_STATUSES: tuple[str, ...] = ("fitted", "fallback", "not_attempted")
#: A fit is attempted only with at least this many customers with a purchase ...
DEFAULT_MIN_CUSTOMERS = 200
#: ... this many repeat buyers (Gamma-Gamma: repeat buyers with a positive spend) ...
DEFAULT_MIN_REPEAT_CUSTOMERS = 30
#: ... and this many days from the earliest first purchase to the as-of date.
DEFAULT_MIN_HISTORY_DAYS = 90
BACKTEST_COLUMNS: tuple[str, ...] = (
    "calibration_end",
    "holdout_end",
    "time_unit",
    "prediction_method",
    "phase",
    "metric",
    "segment",
    "period_index",
    "period_start",
    "period_end",
    "value",
    "customers",
    "backtest_status",
    "status_reason",
)
#: ``backtest_status`` of every row of ``prediction_backtest``.
BACKTEST_STATUSES: tuple[str, ...] = ("ran", "skipped")
#: Backtest windows (``backtest_windows``): the holdout is the last
#: min(holdout_days, floor(holdout_fraction * history days)) days before the as-of date ...
DEFAULT_HOLDOUT_DAYS = 182
DEFAULT_HOLDOUT_FRACTION = 1.0 / 3.0
#: ... and the backtest is skipped unless the calibration period and the holdout have at least
#: these many days.
DEFAULT_MIN_CALIBRATION_DAYS = DEFAULT_MIN_HISTORY_DAYS
DEFAULT_MIN_HOLDOUT_DAYS = 28

#: Sane ranges (in days; alpha's bounds scale with the time unit). Outside them a fit is
#: "absurd": with retail purchase-day data r and a, b are O(0.01..100) and alpha (the scale of
#: the purchase rate's Gamma, in time units) is well below 100 years.
DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {
    "r": (1e-3, 1e3),
    "alpha": (1e-3, 36_500.0),
    "a": (1e-3, 1e3),
    "b": (1e-3, 1e4),
    "p": (1e-3, 1e4),
    "q": (1.0, 1e4),
    "v": (1e-6, 1e12),
}


class FitError(RuntimeError):
    """A model fit did not converge or gave unusable parameters (``validate_fit``).

    ``run_predictions`` turns it into the model's fallback with the message as the reason; only
    a non-finite prediction at accepted parameters (a bug) lets it escape from scoring.
    """


@dataclass(frozen=True)
class FitResult:
    """Outcome of one model fit, enough to score customers and to write ``clv_model_params``.

    ``log_likelihood`` is always computed by this module's own likelihood function at ``params``
    (never taken from the fitting library), so it is comparable across fitting methods.
    ``diagnostics`` holds the convergence evidence: for ``map``/``mle`` the size of the remaining
    Newton step measured in standard errors (``newton_step_se``) and the standard errors from
    the observed information; for ``mcmc`` the largest r-hat and the number of divergences.
    """

    model: Literal["bg_nbd", "gamma_gamma"]
    params: dict[str, float]
    log_likelihood: float
    customers_used: int
    converged: bool
    time_unit: str
    method: str
    as_of_date: date | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] | None = None
    fitted_model: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ModelStatus:
    """What happened to one model (``bg_nbd`` or ``gamma_gamma``) in a run.

    ``status`` is one of ``FIT_STATUSES``: ``fitted`` (fitted, passed ``validate_fit``, used
    for scoring), ``fallback`` (fitted but rejected by ``validate_fit``, or the fitting library
    failed numerically: not used) or ``not_attempted`` (the data are below the minimums, or the
    model it builds on was not fitted). ``reason`` says why in plain English, with what to do;
    None when fitted. ``fit`` is the fit result when a fit was attempted (also when rejected:
    its parameters and diagnostics explain the rejection), else None.
    """

    model: Literal["bg_nbd", "gamma_gamma"]
    status: str
    time_unit: str = "day"
    as_of_date: date | None = None
    reason: str | None = None
    fit: FitResult | None = None

    @property
    def used(self) -> FitResult | None:
        """The fit used for scoring: ``fit`` when ``status == 'fitted'``, else None."""
        return self.fit if self.status == "fitted" else None

    @classmethod
    def fitted(cls, fit: FitResult) -> ModelStatus:
        return cls(fit.model, "fitted", fit.time_unit, fit.as_of_date, None, fit)


# --------------------------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------------------------


def read_customer_features(con: Any, table: str = "marts.customer_features") -> pd.DataFrame:
    """Read the model input from the dbt mart and rename it to the input contract (in days).

    Always returns days: the time unit is applied by the fit and scoring functions, so passing
    this frame to ``run_predictions(..., time_unit="week")`` converts exactly once. Rows without
    a first purchase (prospects who never bought: the mart carries them with zero counts) are
    skipped: the models only describe customers after their first purchase. The contract is
    checked (``prepare_features``).
    """
    sql = f"""
        select
            customer_id,
            cast(frequency as double) as frequency,
            cast(recency_days as double) as recency,
            cast(tenure_days as double) as "T",
            cast(coalesce(avg_repeat_purchase_day_value, 0) as double) as monetary_value
        from {table}
        where first_purchase_date is not null
        order by customer_id
    """
    return prepare_features(con.execute(sql).df(), time_unit="day")


def _as_date(value: date | str | pd.Timestamp | np.datetime64) -> date:
    return pd.Timestamp(value).date()


def _to_frame(data: Any) -> pd.DataFrame:
    """Accept a DataFrame or a DuckDB relation (anything with ``.df()``)."""
    if isinstance(data, pd.DataFrame):
        return data
    if hasattr(data, "df"):
        return data.df()
    raise TypeError(
        f"expected a pandas DataFrame or a DuckDB relation, got {type(data).__name__}; "
        "pass the customer features as one of those"
    )


def prepare_features(data: Any, time_unit: TimeUnit = "day") -> pd.DataFrame:
    """Check the input contract and convert recency/T from days to ``time_unit``.

    Contract violations raise ``ValueError`` naming the column and example customers, because
    silently fitting on broken features (for example recency > T from a wrong as-of cut-off)
    gives confident nonsense. A missing ``monetary_value`` is read as 0 ("no repeat spend
    known"); such customers get the population mean spend.
    """
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit must be one of {sorted(TIME_UNITS)}, got {time_unit!r}")
    df = _to_frame(data)
    missing = [c for c in FEATURE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"customer features lack columns {missing}; expected {list(FEATURE_COLUMNS)} "
            "(read_customer_features renames the mart's recency_days/tenure_days/"
            "avg_repeat_purchase_day_value)"
        )
    out = pd.DataFrame(
        {
            "customer_id": df["customer_id"].to_numpy(),
            "frequency": pd.to_numeric(df["frequency"]).to_numpy(dtype="float64"),
            "recency": pd.to_numeric(df["recency"]).to_numpy(dtype="float64"),
            "T": pd.to_numeric(df["T"]).to_numpy(dtype="float64"),
            "monetary_value": pd.to_numeric(df["monetary_value"])
            .fillna(0.0)
            .to_numpy(dtype="float64"),
        }
    )
    x, tx, T = out["frequency"].to_numpy(), out["recency"].to_numpy(), out["T"].to_numpy()
    checks = {
        "frequency, recency or T is missing or infinite": ~(
            np.isfinite(x) & np.isfinite(tx) & np.isfinite(T)
        ),
        "frequency < 0": x < 0,
        "recency < 0": tx < 0,
        "recency > T (last purchase after the as-of date?)": tx > T + 1e-9,
        "frequency = 0 but recency > 0": (x == 0) & (tx > 0),
        "monetary_value is infinite": ~np.isfinite(out["monetary_value"].to_numpy()),
    }
    for problem, bad in checks.items():
        if bad.any():
            ids = out.loc[bad, "customer_id"].head(5).tolist()
            raise ValueError(
                f"{int(bad.sum())} customer feature rows violate the input contract: {problem}; "
                f"e.g. customer_id {ids}. Fix marts.customer_features (or its as-of cut-off)."
            )
    if out["customer_id"].duplicated().any():
        ids = out.loc[out["customer_id"].duplicated(), "customer_id"].head(5).tolist()
        raise ValueError(f"customer_id must be unique in the features; duplicates e.g. {ids}")
    scale = TIME_UNITS[time_unit]
    if scale != 1.0:
        out["recency"] = out["recency"] / scale
        out["T"] = out["T"] / scale
    return out


# --------------------------------------------------------------------------------------------
# Independent likelihoods (numpy/scipy), used for the log-likelihood column, the convergence
# check and the cross-check of pymc-marketing's fit.
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


def _diagnostics(
    ll_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    log_theta: np.ndarray,
    names: tuple[str, ...],
) -> dict[str, Any]:
    """Convergence evidence at a claimed optimum, independent of the optimizer that found it.

    The Hessian in log-parameter space comes from central differences of the analytic gradient.
    ``newton_step_se`` = sqrt(g' (-H)^-1 g) is the distance to the true maximum in units of the
    statistical standard error (Mahalanobis norm of the remaining Newton step); 0.05 means the
    optimizer stopped 5 % of a standard error away, negligible next to the sampling noise.
    A Hessian that is not negative definite means a flat or saddle direction (unidentified
    parameters), which is reported as not converged.
    """
    k = log_theta.size
    _, g = ll_grad(log_theta)
    h = 1e-5
    H = np.empty((k, k))
    for j in range(k):
        e = np.zeros(k)
        e[j] = h
        H[:, j] = (ll_grad(log_theta + e)[1] - ll_grad(log_theta - e)[1]) / (2 * h)
    H = (H + H.T) / 2
    out: dict[str, Any] = {"gradient_log_params": dict(zip(names, g.tolist(), strict=True))}
    eig = np.linalg.eigvalsh(-H)
    if not np.all(np.isfinite(H)) or eig.min() <= 0:
        out.update(newton_step_se=math.inf, negative_definite=False, std_errors=None)
        return out
    cov = np.linalg.inv(-H)
    step = cov @ g
    theta = np.exp(log_theta)
    # Delta method: SE(theta) = theta * SE(log theta).
    se = theta * np.sqrt(np.diag(cov))
    out.update(
        newton_step_se=float(np.sqrt(max(g @ step, 0.0))),
        negative_definite=True,
        std_errors=dict(zip(names, se.tolist(), strict=True)),
    )
    return out


def _bg_start(x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """A start that lands the mean purchase rate r/alpha on the observed rate."""
    rate = max(float(x.sum()) / max(float(T.sum()), 1e-9), 1e-6)
    return np.log([1.0, 1.0 / rate, 1.0, 1.0])


def _mle(
    ll_grad: Callable[[np.ndarray], tuple[float, np.ndarray]], start: np.ndarray, n: float
) -> optimize.OptimizeResult:
    def neg(lt: np.ndarray) -> tuple[float, np.ndarray]:
        ll, g = ll_grad(lt)
        if not np.isfinite(ll):
            return 1e300, np.zeros_like(lt)
        return -ll / n, -g / n

    bounds = [(-25.0, 25.0)] * start.size
    return optimize.minimize(
        neg,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10},
    )


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
    res = _mle(lambda lt: _bg_ll_grad(lt, d), x0, d.n)
    diag = _diagnostics(lambda lt: _bg_ll_grad(lt, d), res.x, BG_NBD_PARAMS)
    diag["optimizer_message"] = str(res.message)
    params = dict(zip(BG_NBD_PARAMS, np.exp(res.x).tolist(), strict=True))
    return FitResult(
        model="bg_nbd",
        params=params,
        log_likelihood=float(_bg_ll_grad(res.x, d)[0]),
        customers_used=len(df),
        converged=bool(np.isfinite(res.fun) and diag["newton_step_se"] < converge_tol_se),
        time_unit=time_unit,
        method="scipy_mle",
        as_of_date=None if as_of_date is None else _as_date(as_of_date),
        diagnostics=diag,
    )


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
        raise FitError(
            "Gamma-Gamma cannot be fitted: no customer has a repeat purchase with a positive "
            "average spend; check avg_repeat_purchase_day_value in marts.customer_features"
        )
    d = _GgData(gg["frequency"], gg["monetary_value"], None)
    mean_m = float(gg["monetary_value"].mean())
    x0 = np.log([1.0, 2.0, mean_m])  # population mean p v / (q - 1) = observed mean
    res = _mle(lambda lt: _gg_ll_grad(lt, d), x0, d.n)
    diag = _diagnostics(lambda lt: _gg_ll_grad(lt, d), res.x, GAMMA_GAMMA_PARAMS)
    diag["optimizer_message"] = str(res.message)
    return FitResult(
        model="gamma_gamma",
        params=dict(zip(GAMMA_GAMMA_PARAMS, np.exp(res.x).tolist(), strict=True)),
        log_likelihood=float(_gg_ll_grad(res.x, d)[0]),
        customers_used=len(gg),
        converged=bool(np.isfinite(res.fun) and diag["newton_step_se"] < converge_tol_se),
        time_unit=time_unit,
        method="scipy_mle",
        as_of_date=None if as_of_date is None else _as_date(as_of_date),
        diagnostics=diag,
    )


# --------------------------------------------------------------------------------------------
# pymc-marketing fits
# --------------------------------------------------------------------------------------------

#: scipy options for pymc's MAP search (L-BFGS-B). pymc minimises the *total* -logp, so the
#: default relative tolerance loosens with the number of customers: at 1 M simulated customers
#: it stopped 0.026 standard errors short of the maximum, ftol=1e-12 stops 1e-4 short for a
#: few more evaluations (benchmarks/bench_predictions.py).
MAP_OPTIONS: dict[str, Any] = {"maxiter": 5000, "ftol": 1e-12}
DEFAULT_MCMC_KWARGS: dict[str, Any] = {
    "draws": 1000,
    "tune": 1000,
    "chains": 2,
    "cores": 2,
    "random_seed": 42,
    "progressbar": False,
}


#: pytensor compiles the models' C code once and caches it on disk; a cold cache costs about
#: 35 s per fitting process, a warm one about 1 s (docs/benchmarks.md, "Start-up cost"). By
#: default the cache is in the home folder, which a container, a CI runner or a service user
#: without a home does not keep; this project keeps it beside the code instead, unless pytensor
#: is configured otherwise (``PYTENSOR_FLAGS`` with a compiledir, ``PYTENSORRC``, ~/.pytensorrc).
PYTENSOR_CACHE_DIR = PROJECT_DIR / ".cache" / "pytensor"


def use_project_compile_cache(
    environ: MutableMapping[str, str] | None = None,
    cache_dir: Path | None = None,
    modules: Mapping[str, Any] | None = None,
) -> Path | None:
    """Point pytensor's ``base_compiledir`` at :data:`PYTENSOR_CACHE_DIR` before pytensor is
    imported (it reads its flags once, at import). Returns the folder, or None when pytensor is
    already imported or configured, or the folder cannot be written (then pytensor's default
    applies). Results do not change: the cache holds compiled code, not numbers."""
    env = os.environ if environ is None else environ
    folder = PYTENSOR_CACHE_DIR if cache_dir is None else cache_dir
    flags = env.get("PYTENSOR_FLAGS", "")
    if (
        "pytensor" in (sys.modules if modules is None else modules)
        or "compiledir" in flags
        or env.get("PYTENSORRC")
        or (Path.home() / ".pytensorrc").exists()
        or any(c in str(folder) for c in ",= ")  # PYTENSOR_FLAGS cannot quote them
    ):
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(folder, os.W_OK):
        return None
    env["PYTENSOR_FLAGS"] = ",".join(part for part in (flags, f"base_compiledir={folder}") if part)
    return folder


def _flat_config(names: tuple[str, ...]) -> dict[str, Any]:
    """HalfFlat priors: the log posterior equals the log-likelihood, so MAP is the MLE.

    (pymc's find_MAP optimises without the log-transform Jacobian, so the flat prior stays flat
    on the original scale.)
    """
    use_project_compile_cache()
    from pymc_extras.prior import Prior

    return {k: Prior("HalfFlat") for k in names}


def _posterior_summary(
    model: Any, names: tuple[str, ...], method: str
) -> tuple[dict[str, float], dict[str, tuple[float, float]] | None, dict[str, Any]]:
    post = model.idata.posterior
    params = {k: float(post[k].mean()) for k in names}
    if method == "map":
        return params, None, {}
    import arviz as az

    intervals = {k: (float(post[k].quantile(0.03)), float(post[k].quantile(0.97))) for k in names}
    rhat = az.rhat(model.idata, var_names=list(names))
    diag: dict[str, Any] = {"r_hat": {k: float(rhat[k]) for k in names}}
    stats_ = getattr(model.idata, "sample_stats", None)
    if stats_ is not None and "diverging" in stats_:
        diag["divergences"] = int(stats_["diverging"].sum())
    return params, intervals, diag


def _run_pymc_fit(model: Any, frame: pd.DataFrame, method: str, mcmc_kwargs: Mapping | None):
    """Fit quietly; MAP gets tight tolerances, MCMC the defaults merged with the caller's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "map":
            model.fit(frame, method="map", progressbar=False, options=dict(MAP_OPTIONS))
        elif method == "mcmc":
            model.fit(frame, method="mcmc", **{**DEFAULT_MCMC_KWARGS, **(mcmc_kwargs or {})})
        else:
            raise ValueError(f"method must be 'map' or 'mcmc', got {method!r}")


def _converged(method: str, diag: Mapping[str, Any], tol_se: float) -> bool:
    if method == "mcmc":
        return max(diag["r_hat"].values()) < 1.05
    return bool(diag.get("newton_step_se", math.inf) < tol_se)


def fit_bg_nbd(
    data: Any,
    method: FitMethod = "map",
    *,
    time_unit: TimeUnit = "day",
    as_of_date: date | str | None = None,
    mcmc_kwargs: Mapping[str, Any] | None = None,
    converge_tol_se: float = 0.05,
) -> FitResult:
    """Fit the BG/NBD with ``pymc_marketing.clv.BetaGeoModel`` and flat priors.

    ``method="map"``: maximum likelihood (MAP with HalfFlat priors). ``method="mcmc"``: NUTS
    with the same flat priors; ``params`` are posterior means, ``intervals`` the 94 %
    equal-tailed intervals, and ``fitted_model`` keeps the pymc-marketing object for per-customer
    intervals (``fitted_model.expected_purchases(...)`` over draws).

    ``converged`` for MAP is decided independently of pymc's optimizer: the remaining Newton step
    of this module's likelihood at the returned parameters must be below ``converge_tol_se``
    standard errors (see ``_diagnostics``). For MCMC it means every r-hat < 1.05.
    """
    df = prepare_features(data, time_unit)
    return _fit_bg_nbd(df, method, time_unit, as_of_date, mcmc_kwargs, converge_tol_se)


def _fit_bg_nbd(
    df: pd.DataFrame,
    method: str,
    time_unit: str,
    as_of_date: date | str | None,
    mcmc_kwargs: Mapping[str, Any] | None,
    converge_tol_se: float = 0.05,
) -> FitResult:
    """``fit_bg_nbd`` on features already prepared (recency/T in ``time_unit``)."""
    use_project_compile_cache()
    from pymc_marketing.clv import BetaGeoModel

    # The ids do not matter for fitting; a range index keeps pymc's coords cheap.
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(len(df)),
            "frequency": df["frequency"].to_numpy(),
            "recency": df["recency"].to_numpy(),
            "T": df["T"].to_numpy(),
        }
    )
    d = _BgData(frame["frequency"], frame["recency"], frame["T"], None)
    return _fit_with_pymc(
        "bg_nbd",
        BetaGeoModel,
        BG_NBD_PARAMS,
        frame,
        lambda lt: _bg_ll_grad(lt, d),
        method=method,
        time_unit=time_unit,
        as_of_date=as_of_date,
        mcmc_kwargs=mcmc_kwargs,
        converge_tol_se=converge_tol_se,
    )


def _fit_with_pymc(
    model_name: str,
    model_cls: Any,
    param_names: tuple[str, ...],
    frame: pd.DataFrame,
    ll_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    *,
    method: str,
    time_unit: str,
    as_of_date: date | str | None,
    mcmc_kwargs: Mapping[str, Any] | None,
    converge_tol_se: float,
) -> FitResult:
    """Fit one pymc-marketing model with flat priors and judge the fit with this module's own
    log-likelihood (``ll_grad`` maps log-parameters to (log-likelihood, gradient))."""
    model = model_cls(model_config=_flat_config(param_names))
    _run_pymc_fit(model, frame, method, mcmc_kwargs)
    params, intervals, diag = _posterior_summary(model, param_names, method)
    theta = np.array([params[k] for k in param_names])
    finite = bool(np.all(np.isfinite(theta)) and np.all(theta > 0))
    if finite:
        diag.update(_diagnostics(ll_grad, np.log(theta), param_names))
        ll = float(ll_grad(np.log(theta))[0])
    else:
        ll = math.nan
    return FitResult(
        model=model_name,
        params=params,
        log_likelihood=ll,
        customers_used=len(frame),
        converged=finite and _converged(method, diag, converge_tol_se),
        time_unit=time_unit,
        method=method,
        as_of_date=None if as_of_date is None else _as_date(as_of_date),
        diagnostics=diag,
        intervals=intervals,
        fitted_model=model,
    )


def fit_gamma_gamma(
    data: Any,
    method: FitMethod = "map",
    *,
    time_unit: TimeUnit = "day",
    as_of_date: date | str | None = None,
    mcmc_kwargs: Mapping[str, Any] | None = None,
    converge_tol_se: float = 0.05,
) -> FitResult:
    """Fit the Gamma-Gamma spend model with ``pymc_marketing.clv.GammaGammaModel``.

    Uses only repeat buyers with a positive average spend (the model's likelihood is undefined
    for x = 0 or m <= 0). Flat priors are pymc-marketing's default for this model, so MAP is the
    MLE; ``method="mcmc"`` as in ``fit_bg_nbd``.
    """
    df = prepare_features(data, time_unit)
    return _fit_gamma_gamma(df, method, time_unit, as_of_date, mcmc_kwargs, converge_tol_se)


def _fit_gamma_gamma(
    df: pd.DataFrame,
    method: str,
    time_unit: str,
    as_of_date: date | str | None,
    mcmc_kwargs: Mapping[str, Any] | None,
    converge_tol_se: float = 0.05,
) -> FitResult:
    """``fit_gamma_gamma`` on features already prepared."""
    use_project_compile_cache()
    from pymc_marketing.clv import GammaGammaModel

    gg = _gg_input(df)
    if gg.empty:
        raise FitError(
            "Gamma-Gamma cannot be fitted: no customer has a repeat purchase with a positive "
            "average spend; check avg_repeat_purchase_day_value in marts.customer_features"
        )
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(len(gg)),
            "frequency": gg["frequency"].to_numpy(),
            "monetary_value": gg["monetary_value"].to_numpy(),
        }
    )
    d = _GgData(frame["frequency"], frame["monetary_value"], None)
    return _fit_with_pymc(
        "gamma_gamma",
        GammaGammaModel,
        GAMMA_GAMMA_PARAMS,
        frame,
        lambda lt: _gg_ll_grad(lt, d),
        method=method,
        time_unit=time_unit,
        as_of_date=as_of_date,
        mcmc_kwargs=mcmc_kwargs,
        converge_tol_se=converge_tol_se,
    )


#: What an out-of-range parameter usually means, per (parameter, "low"/"high").
_PARAM_HINTS = {
    ("r", "low"): "r (shape of the purchase-rate distribution) near 0 means almost nobody buys "
    "again: too few repeat purchase days, or frequency counts orders of one day as one purchase "
    "and nobody has a second day",
    ("r", "high"): "a huge r means every customer buys at the same rate; check that frequency "
    "is not a constant",
    ("alpha", "low"): "alpha (scale of the purchase rate, in time units) is tiny; check the time "
    "unit (recency/T in days vs weeks) and that T is not near 0 for everyone",
    ("alpha", "high"): "alpha (scale of the purchase rate, in time units) is huge; check the "
    "time unit (recency/T in days vs weeks) and that repeat purchases exist",
    ("a", "low"): "a, b shape the dropout probability; an extreme a or b means the data show "
    "no sign of dropout (everyone's last purchase is recent) or no repeat buyers",
    ("a", "high"): "a, b shape the dropout probability; an extreme a or b means the data show "
    "no sign of dropout (everyone's last purchase is recent) or no repeat buyers",
    ("p", "low"): "p is the shape of each purchase day's spend; check the spend amounts",
    ("p", "high"): "p is the shape of each purchase day's spend; check the spend amounts",
    ("q", "low"): "q is the shape of the spend scale across customers; a small q means spend "
    "is very heavy-tailed across customers: check for absurd amounts",
    ("q", "high"): "q is the shape of the spend scale across customers; check the amounts",
    ("v", "low"): "v is the scale of spend; check the amounts' currency and units",
    ("v", "high"): "v is the scale of spend; check the amounts' currency and units",
}
_PARAM_HINTS[("b", "low")] = _PARAM_HINTS[("a", "low")]
_PARAM_HINTS[("b", "high")] = _PARAM_HINTS[("a", "high")]


def _param_hint(name: str, low: bool) -> str:
    return _PARAM_HINTS.get(
        (name, "low" if low else "high"), "check the input features for broken rows"
    )


def validate_fit(
    result: FitResult, bounds: Mapping[str, tuple[float, float]] | None = None
) -> FitResult:
    """Raise ``FitError`` unless the fit converged and every parameter is finite and sane.

    ``run_predictions`` uses the model only when this passes (otherwise its fallback, with the
    message as ``status_reason``), and the asset's blocking check repeats it on the models used
    for scoring. Bounds default to ``DEFAULT_BOUNDS`` (alpha's are in days and scale with the
    time unit). Returns the result unchanged so it can be chained.
    """
    limits = {**DEFAULT_BOUNDS, **(bounds or {})}
    scale = TIME_UNITS.get(result.time_unit, 1.0)
    what = f"{result.model} fit ({result.method}, {result.customers_used} customers)"
    for name, value in result.params.items():
        lo, hi = limits[name]
        if name == "alpha":
            lo, hi = lo / scale, hi / scale
        if not np.isfinite(value):
            raise FitError(
                f"{what}: parameter {name} is {value}; the optimizer failed. Check the input "
                "features for broken rows and re-run with method='mcmc' to inspect."
            )
        if name == "q" and value <= 1.0:
            raise FitError(
                f"{what}: q = {value:.4g} <= 1, so the population mean spend p*v/(q-1) is "
                "infinite: spend is too heavy-tailed across customers for Gamma-Gamma. Check "
                "for absurd amounts or a wrong currency conversion in the features."
            )
        if not lo <= value <= hi:
            raise FitError(
                f"{what}: parameter {name} = {value:.4g} is outside the sane range "
                f"[{lo:.4g}, {hi:.4g}]: {_param_hint(name, value < lo)}."
            )
    if not np.isfinite(result.log_likelihood):
        raise FitError(f"{what}: the log-likelihood at the fitted parameters is not finite.")
    if not result.converged:
        diag = result.diagnostics
        if result.method == "mcmc":
            detail = f"r-hat {diag.get('r_hat')} (need < 1.05); run more tune/draws"
        elif not diag.get("negative_definite", True):
            detail = (
                "the log-likelihood is flat or saddle-shaped at the solution, so some "
                "parameters are not identified by the data (too few repeat buyers, or no "
                "variation in recency)"
            )
        else:
            detail = (
                f"the optimizer stopped {diag.get('newton_step_se', math.nan):.3g} standard "
                "errors from the maximum (limit 0.05); check the features for outliers or "
                "re-run with method='mcmc'"
            )
        raise FitError(f"{what} did not converge: {detail}.")
    return result


def model_params_table(
    *fits: FitResult | ModelStatus | None, as_of_date: date | str | None = None
) -> pd.DataFrame:
    """Rows of ``marts.clv_model_params`` (``PARAM_COLUMNS``); None is skipped.

    A ``FitResult`` (or a ``ModelStatus`` with status ``fitted``) gives one row per parameter,
    ``fit_status = 'fitted'`` and ``status_reason`` NULL. A ``ModelStatus`` that is not fitted
    gives one row with ``parameter``, ``value`` and ``log_likelihood`` NULL, its status and
    reason; when a fit was attempted and rejected, ``customers_used``, ``converged`` and
    ``fit_method`` describe that fit, otherwise they are 0, NULL and NULL.
    """
    rows = []
    for item in fits:
        if item is None:
            continue
        status = ModelStatus.fitted(item) if isinstance(item, FitResult) else item
        fit = status.fit
        as_of = _as_date(as_of_date) if as_of_date is not None else status.as_of_date
        if as_of is None and fit is not None:
            as_of = fit.as_of_date
        common = {
            "model": status.model,
            "time_unit": status.time_unit if fit is None else fit.time_unit,
            "as_of_date": as_of,
            "customers_used": 0 if fit is None else int(fit.customers_used),
            "converged": None if fit is None else bool(fit.converged),
            "fit_method": None if fit is None else fit.method,
            "fit_status": status.status,
            "status_reason": status.reason,
        }
        if status.status == "fitted" and fit is not None:
            for name, value in fit.params.items():
                rows.append(
                    {
                        **common,
                        "parameter": name,
                        "value": float(value),
                        "log_likelihood": float(fit.log_likelihood),
                    }
                )
        else:
            rows.append({**common, "parameter": None, "value": None, "log_likelihood": None})
    out = pd.DataFrame(rows, columns=list(PARAM_COLUMNS))
    out["as_of_date"] = pd.array(
        [None if v is None else pd.Timestamp(v).date() for v in out["as_of_date"]],
        dtype=pd.ArrowDtype(pa.date32()),
    )
    # Nullable types, so an all-NULL column still lands in DuckDB as VARCHAR/DOUBLE/BOOLEAN.
    text = pd.ArrowDtype(pa.string())
    return out.astype(
        {
            "model": text,
            "parameter": text,
            "value": "Float64",
            "time_unit": text,
            "customers_used": "int64",
            "log_likelihood": "Float64",
            "converged": "boolean",
            "fit_method": text,
            "fit_status": text,
            "status_reason": text,
        }
    )


# --------------------------------------------------------------------------------------------
# Closed-form predictions
# --------------------------------------------------------------------------------------------


def _arr(v: Any) -> np.ndarray:
    return np.asarray(v, dtype="float64")


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


def _shrunk_mean_spend(frequency, monetary_value, population_mean: float) -> np.ndarray:
    """Fallback AOV when no Gamma-Gamma is fitted: (x m + mbar) / (x + 1)."""
    x, m = _arr(frequency), _arr(monetary_value)
    usable = (x > 0) & (m > 0)
    x_eff = np.where(usable, x, 0.0)
    return (x_eff * np.where(usable, m, 0.0) + population_mean) / (x_eff + 1.0)


def monthly_discount_factors(annual_discount_rate: float, months: int = 12) -> np.ndarray:
    """1 / (1 + d)^m for m = 1..months, d = (1 + annual)^(1/12) - 1 (month-end discounting)."""
    if annual_discount_rate <= -1:
        raise ValueError("annual_discount_rate must be > -1 (0.10 means 10 % per year)")
    d = (1.0 + annual_discount_rate) ** (1.0 / 12.0) - 1.0
    return 1.0 / (1.0 + d) ** np.arange(1, months + 1)


def validate_churn_thresholds(thresholds: Mapping[str, float] | None) -> dict[str, float]:
    """Check the band thresholds: keys low/medium/high (``lost`` optional), 1 >= low >= medium
    >= high >= 0. Returns a plain dict of the three thresholds."""
    th = dict(DEFAULT_CHURN_THRESHOLDS if thresholds is None else thresholds)
    th.pop("lost", None)
    if set(th) != {"low", "medium", "high"}:
        raise ValueError(
            "churn thresholds need exactly the bands low, medium, high (lost optional), "
            f"got {sorted(th)}; e.g. {DEFAULT_CHURN_THRESHOLDS}"
        )
    lo, me, hi = float(th["low"]), float(th["medium"]), float(th["high"])
    if not 1.0 >= lo >= me >= hi >= 0.0:
        raise ValueError(
            "churn thresholds must satisfy 1 >= low >= medium >= high >= 0 (minimum p_alive "
            f"of each band), got low={lo}, medium={me}, high={hi}"
        )
    return {"low": lo, "medium": me, "high": hi}


def churn_thresholds_from_rows(rows: Any) -> dict[str, float]:
    """Thresholds from a seed-shaped table with columns ``band`` and ``min_p_alive``."""
    df = _to_frame(rows)
    missing = {"band", "min_p_alive"} - set(df.columns)
    if missing:
        raise ValueError(f"churn threshold rows need columns band, min_p_alive; missing {missing}")
    return validate_churn_thresholds(
        {str(b): float(v) for b, v in zip(df["band"], df["min_p_alive"], strict=True)}
    )


def churn_band(p_alive: Any, thresholds: Mapping[str, float] | None = None) -> np.ndarray:
    """Band per customer: p >= low -> low, >= medium -> medium, >= high -> high, else lost."""
    th = validate_churn_thresholds(thresholds)
    p = _arr(p_alive)
    return np.select(
        [p >= th["low"], p >= th["medium"], p >= th["high"]], ["low", "medium", "high"], "lost"
    ).astype(object)


def _date_column(as_of: date, days: np.ndarray, valid: np.ndarray) -> pd.arrays.ArrowExtensionArray:
    base = np.datetime64(as_of, "D")
    values = base + np.where(valid, days, 0).astype("int64").astype("timedelta64[D]")
    return pd.arrays.ArrowExtensionArray(pa.array(values, type=pa.date32(), mask=~valid))


@dataclass(frozen=True)
class Scorer:
    """Everything scoring needs, fixed before the first batch so batches are independent.

    ``bg_params``/``gg_params`` are None when that model is not used (fallbacks). The
    population statistics feed the fallbacks and are computed once from the full input.
    All ``t`` arguments are in ``time_unit``.
    """

    as_of_date: date
    time_unit: str = "day"
    bg_params: dict[str, float] | None = None
    gg_params: dict[str, float] | None = None
    mean_frequency: float = 0.0
    mean_T: float = 0.0
    mean_spend: float = 0.0
    churn_thresholds: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_CHURN_THRESHOLDS)
    )
    annual_discount_rate: float = 0.10
    next_purchase_horizon_days: float = 365.0

    @property
    def method(self) -> str:
        """The ``prediction_method`` value of every row this scorer writes."""
        if self.bg_params is None:
            return "naive_rate"
        return "bg_nbd" if self.gg_params is not None else "bg_nbd_mean_spend"

    def _naive_rate(self, x: np.ndarray, T: np.ndarray) -> np.ndarray:
        mean_T = self.mean_T if self.mean_T > 0 else 1.0
        return (x + self.mean_frequency) / (T + mean_T)

    def p_alive(self, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> np.ndarray:
        if self.bg_params is not None:
            return bg_nbd_p_alive(self.bg_params, x, tx, T)
        return np.exp(-self._naive_rate(x, T) * (T - tx))

    def expected_purchases(self, t: Any, x, tx, T, p_alive: np.ndarray) -> np.ndarray:
        if self.bg_params is not None:
            return bg_nbd_expected_purchases(self.bg_params, t, x, tx, T, p_alive)
        return p_alive * self._naive_rate(x, T) * t

    def expected_purchases_new_customer(self, t: Any) -> np.ndarray:
        """E[X(t)] for a customer who just made a first purchase (FHL 2005 eq. 9)."""
        t = _arr(t)
        if self.bg_params is not None:
            zero = np.zeros_like(t)
            return bg_nbd_expected_purchases(self.bg_params, t, zero, zero, zero)
        mean_T = self.mean_T if self.mean_T > 0 else 1.0
        return self.mean_frequency / mean_T * t

    def p_no_purchase(self, t: Any, x, tx, T, p_alive: np.ndarray) -> np.ndarray:
        if self.bg_params is not None:
            return bg_nbd_p_no_purchase(self.bg_params, t, x, tx, T, p_alive)
        return 1.0 - p_alive + p_alive * np.exp(-self._naive_rate(x, T) * t)

    def median_wait(self, x: np.ndarray, T: np.ndarray) -> np.ndarray:
        if self.bg_params is not None:
            return bg_nbd_median_wait(self.bg_params, x, T)
        lam = self._naive_rate(x, T)
        return np.where(lam > 0, np.log(2.0) / np.where(lam > 0, lam, 1.0), np.inf)

    def expected_spend(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        if self.gg_params is not None:
            return gamma_gamma_expected_spend(self.gg_params, x, m)
        return _shrunk_mean_spend(x, m, self.mean_spend)

    def score(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Predictions for one batch of prepared features (recency/T in ``time_unit``)."""
        th = validate_churn_thresholds(self.churn_thresholds)
        unit = TIME_UNITS[self.time_unit]
        x = batch["frequency"].to_numpy(dtype="float64")
        tx = batch["recency"].to_numpy(dtype="float64")
        T = batch["T"].to_numpy(dtype="float64")
        m = batch["monetary_value"].to_numpy(dtype="float64")
        n = len(x)

        p_alive = self.p_alive(x, tx, T)
        # Cumulative expected purchases at the 12 month ends (month 12 = 365 days).
        month_t = np.arange(1, 13) * MONTH_DAYS / unit
        cum = np.zeros((13, n))
        for k, t in enumerate(month_t, start=1):
            cum[k] = self.expected_purchases(t, x, tx, T, p_alive)
        e30 = self.expected_purchases(30.0 / unit, x, tx, T, p_alive)
        e90 = self.expected_purchases(90.0 / unit, x, tx, T, p_alive)
        p0_90 = self.p_no_purchase(90.0 / unit, x, tx, T, p_alive)
        aov = self.expected_spend(x, m)
        monthly = np.clip(np.diff(cum, axis=0), 0.0, None)
        clv = aov * (monthly_discount_factors(self.annual_discount_rate) @ monthly)

        with np.errstate(over="ignore", invalid="ignore"):
            wait_days = self.median_wait(x, T) * unit
        has_date = (
            np.isfinite(wait_days)
            & (wait_days <= self.next_purchase_horizon_days)
            & (p_alive >= th["high"])
        )
        days = np.maximum(np.ceil(np.where(has_date, wait_days, 1.0)), 1.0)
        out = pd.DataFrame(
            {
                "customer_id": batch["customer_id"].to_numpy(),
                "as_of_date": _date_column(self.as_of_date, np.zeros(n), np.ones(n, dtype=bool)),
                "p_alive": np.clip(p_alive, 0.0, 1.0),
                "expected_purchases_30d": np.clip(e30, 0.0, None),
                "expected_purchases_90d": np.clip(e90, 0.0, None),
                "expected_purchases_365d": np.clip(cum[-1], 0.0, None),
                "p_no_purchase_90d": np.clip(p0_90, 0.0, 1.0),
                "expected_avg_order_value": aov,
                "clv_12m": clv,
                "predicted_next_purchase_date": _date_column(self.as_of_date, days, has_date),
                "churn_risk_band": churn_band(p_alive, th),
                "prediction_method": self.method,
            }
        )
        numeric = out.select_dtypes("number").to_numpy()
        bad = ~np.isfinite(numeric).all(axis=1)
        if bad.any():
            raise FitError(
                f"{int(bad.sum())} customers got non-finite predictions (e.g. customer_id "
                f"{out.loc[bad, 'customer_id'].head(5).tolist()}) with BG/NBD {self.bg_params} "
                f"and Gamma-Gamma {self.gg_params}; check these customers' features and the "
                "fitted parameters"
            )
        return out


def _iter_frames(data: Any, batch_size: int) -> Iterator[pd.DataFrame]:
    if isinstance(data, pd.DataFrame):
        for start in range(0, len(data), batch_size):
            yield data.iloc[start : start + batch_size]
    elif hasattr(data, "to_arrow_reader"):  # DuckDB relation: stream, never materialise all
        for record_batch in data.to_arrow_reader(batch_size):
            yield record_batch.to_pandas()
    else:
        yield from data


def iter_predictions(
    data: Any, scorer: Scorer, batch_size: int = DEFAULT_BATCH_SIZE, *, prepared: bool = False
) -> Iterator[pd.DataFrame]:
    """Yield prediction batches of at most ``batch_size`` rows (bounded memory).

    ``data``: a DataFrame, a DuckDB relation (streamed with ``to_arrow_reader``) or an iterable
    of DataFrames, all in the input contract with recency/T in DAYS unless ``prepared=True``
    (already converted to ``scorer.time_unit`` by ``prepare_features``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for frame in _iter_frames(data, batch_size):
        if frame.empty:
            continue
        batch = frame if prepared else prepare_features(frame, scorer.time_unit)  # type: ignore[arg-type]
        yield scorer.score(batch)


def score_customers(
    data: Any, scorer: Scorer, batch_size: int = DEFAULT_BATCH_SIZE, *, prepared: bool = False
) -> pd.DataFrame:
    """All predictions as one DataFrame (``PREDICTION_COLUMNS``), computed batch by batch."""
    parts = list(iter_predictions(data, scorer, batch_size, prepared=prepared))
    if not parts:
        return _empty_predictions()
    return pd.concat(parts, ignore_index=True)


def _empty_predictions(id_dtype: Any = None) -> pd.DataFrame:
    """No rows, every column of ``PREDICTION_COLUMNS`` with a type DuckDB can store: text
    columns are Arrow strings (an empty object column would become DuckDB's NULL type), and
    ``customer_id`` keeps the input's type when that is not object."""
    text = pd.ArrowDtype(pa.string())
    out = pd.DataFrame({c: pd.Series(dtype="float64") for c in PREDICTION_COLUMNS})
    for c in ("as_of_date", "predicted_next_purchase_date"):
        out[c] = pd.Series(pd.array([], dtype=pd.ArrowDtype(pa.date32())))
    for c in ("churn_risk_band", "prediction_method"):
        out[c] = pd.Series([], dtype=text)
    keep = id_dtype is not None and id_dtype != np.dtype(object)
    out["customer_id"] = pd.Series([], dtype=id_dtype if keep else text)
    return out


# --------------------------------------------------------------------------------------------
# One-shot: fit (with fallbacks and validation) and score
# --------------------------------------------------------------------------------------------


@dataclass
class PredictionRun:
    """Result of ``run_predictions``: the two mart tables plus the fits behind them.

    ``bg_fit``/``gg_fit`` are the fits used for scoring (None when that model is not used);
    ``bg_status``/``gg_status`` say what happened to each model and why.
    """

    predictions: pd.DataFrame
    params: pd.DataFrame
    scorer: Scorer
    bg_fit: FitResult | None
    gg_fit: FitResult | None
    bg_status: ModelStatus | None = None
    gg_status: ModelStatus | None = None

    @property
    def statuses(self) -> tuple[ModelStatus, ...]:
        return tuple(s for s in (self.bg_status, self.gg_status) if s is not None)

    @property
    def uses_fitted_models(self) -> bool:
        """True when both models were fitted and used (``prediction_method = 'bg_nbd'``)."""
        return all(s.status == "fitted" for s in self.statuses)

    @property
    def fallback_reasons(self) -> dict[str, str]:
        """Model name -> reason, for every model that was not fitted."""
        return {s.model: s.reason or "" for s in self.statuses if s.status != "fitted"}


@dataclass(frozen=True)
class _Fits:
    scorer: Scorer
    bg: ModelStatus
    gg: ModelStatus


#: What each fallback does, appended to the reason of a model that is not used.
_NAIVE_NOTE = (
    "Predictions use the naive_rate fallback: each customer's own purchase rate, shrunk toward "
    "the average customer, with spend per purchase day shrunk toward the average repeat spend."
)
_MEAN_SPEND_NOTE = (
    "Spend per purchase day uses the bg_nbd_mean_spend fallback: the customer's average repeat "
    "spend shrunk toward the average repeat spend."
)
_WAIT_NOTE = "The model is fitted automatically once the data meet the minimums."
#: Numeric failures of the fitting library on degenerate data: a fallback, like a FitError.
_FIT_LIBRARY_ERRORS = (ArithmeticError, np.linalg.LinAlgError)


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _bg_requirements(
    n: int,
    n_repeat: int,
    first_purchase: date | None,
    as_of: date,
    span_days: float,
    min_customers: int,
    min_repeat_customers: int,
    min_history_days: float,
) -> str | None:
    """Why the BG/NBD is not attempted (None when the data meet every minimum)."""
    if n == 0:
        return (
            "Not fitted: no customer has a purchase on or before the as-of date "
            f"{as_of.isoformat()}, so there is nobody to predict (the predictions table is "
            "empty). Check that orders were loaded and that they are not all refunded or "
            "cancelled."
        )
    short = []
    if n < min_customers:
        short.append(
            f"{_count(n, 'customer')} with a purchase (it needs at least {min_customers:,}, "
            "min_customers)"
        )
    if n_repeat == 0:
        short.append(
            "nobody has bought on a second day yet, so repeat buying and dropout cannot be "
            f"estimated (it needs at least {min_repeat_customers:,} repeat buyers, "
            "min_repeat_customers)"
        )
    elif n_repeat < min_repeat_customers:
        short.append(
            f"{_count(n_repeat, 'repeat buyer')} (customers with purchases on two or more days; "
            f"it needs at least {min_repeat_customers:,}, min_repeat_customers)"
        )
    if span_days < min_history_days:
        short.append(
            f"a purchase history of {_count(int(round(span_days)), 'day')} (first purchase "
            f"{first_purchase}, as-of date {as_of}; it needs at least {min_history_days:g} "
            "days, min_history_days, to tell slow buyers from customers who left)"
        )
    if not short:
        return None
    return "Not fitted: too little data for the BG/NBD: " + "; ".join(short) + ". "


def _attempt_fit(
    model: Literal["bg_nbd", "gamma_gamma"],
    fit_fn: Callable[[], FitResult],
    bounds: Mapping[str, tuple[float, float]] | None,
    time_unit: str,
    as_of: date,
    note: str,
) -> ModelStatus:
    """Fit and validate one model; a ``FitError`` (or a numeric failure of the fitting
    library) becomes status ``fallback`` with the message as the reason. Anything else (a
    wrong option, a bug) propagates."""
    name = "BG/NBD" if model == "bg_nbd" else "Gamma-Gamma"
    fit: FitResult | None = None
    try:
        fit = fit_fn()
        validate_fit(fit, bounds)
    except FitError as exc:
        reason = f"The {name} fit was rejected: {exc} {note}"
    except _FIT_LIBRARY_ERRORS as exc:
        reason = (
            f"The {name} fit failed in the fitting library ({type(exc).__name__}: {exc}); "
            f"the data are probably degenerate for this model. {note}"
        )
    else:
        return ModelStatus.fitted(fit)
    return ModelStatus(model, "fallback", time_unit, as_of, reason, fit)


def fit_models(
    features: Any,
    as_of_date: date | str,
    *,
    time_unit: TimeUnit = "day",
    method: FitMethod = "map",
    churn_thresholds: Mapping[str, float] | None = None,
    annual_discount_rate: float = 0.10,
    min_customers: int = DEFAULT_MIN_CUSTOMERS,
    min_repeat_customers: int = DEFAULT_MIN_REPEAT_CUSTOMERS,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    mcmc_kwargs: Mapping[str, Any] | None = None,
    next_purchase_horizon_days: float = 365.0,
    max_fit_customers: int | None = None,
    min_history_days: float = DEFAULT_MIN_HISTORY_DAYS,
) -> tuple[Scorer, FitResult | None, FitResult | None]:
    """Fit what the data support, validate, and build the ``Scorer`` (features in days).

    Returns the scorer and the fits it uses (None for a model that is not used); the rules are
    those of ``run_predictions`` (module docstring, "Fallbacks"), which also reports each
    model's status and reason. Never raises for a data reason.

    ``max_fit_customers``: fit on a random sample of that many customers (fixed seed 0) when
    there are more; everyone is still scored. ``customers_used`` then reports the sample size.
    The default (None) fits on everyone; see benchmarks/bench_predictions.py for the trade-off.
    """
    prepared = prepare_features(features, time_unit)
    fits = _fit_models(
        prepared,
        _as_date(as_of_date),
        time_unit,
        method,
        churn_thresholds,
        annual_discount_rate,
        min_customers,
        min_repeat_customers,
        bounds,
        mcmc_kwargs,
        next_purchase_horizon_days,
        max_fit_customers,
        min_history_days,
    )
    return fits.scorer, fits.bg.used, fits.gg.used


def _fit_models(
    prepared: pd.DataFrame,
    as_of: date,
    time_unit: str,
    method: str,
    churn_thresholds: Mapping[str, float] | None,
    annual_discount_rate: float,
    min_customers: int,
    min_repeat_customers: int,
    bounds: Mapping[str, tuple[float, float]] | None,
    mcmc_kwargs: Mapping[str, Any] | None,
    next_purchase_horizon_days: float,
    max_fit_customers: int | None = None,
    min_history_days: float = DEFAULT_MIN_HISTORY_DAYS,
) -> _Fits:
    """The fallback ladder of the module docstring. Option errors raise ``ValueError``."""
    if method not in ("map", "mcmc"):
        raise ValueError(f"method must be 'map' or 'mcmc', got {method!r}")
    thresholds = validate_churn_thresholds(churn_thresholds)
    x = prepared["frequency"].to_numpy()
    m = prepared["monetary_value"].to_numpy()
    T_days = prepared["T"].to_numpy() * TIME_UNITS[time_unit]
    n, n_repeat = len(prepared), int((x > 0).sum())
    spend_ok = (x > 0) & (m > 0)
    span_days = float(T_days.max()) if n else 0.0
    first_purchase = as_of - timedelta(days=int(round(span_days))) if n else None

    def status(model: Literal["bg_nbd", "gamma_gamma"], reason: str) -> ModelStatus:
        return ModelStatus(model, "not_attempted", time_unit, as_of, reason)

    short = _bg_requirements(
        n,
        n_repeat,
        first_purchase,
        as_of,
        span_days,
        min_customers,
        min_repeat_customers,
        min_history_days,
    )
    fit_on = prepared
    if short is not None:
        note = "" if n == 0 else f"{_NAIVE_NOTE} {_WAIT_NOTE}"
        bg = status("bg_nbd", (short + note).strip())
    else:
        if max_fit_customers is not None and n > max_fit_customers:
            fit_on = prepared.sample(n=max_fit_customers, random_state=0)
        bg = _attempt_fit(
            "bg_nbd",
            lambda: _fit_bg_nbd(fit_on, method, time_unit, as_of, mcmc_kwargs),
            bounds,
            time_unit,
            as_of,
            _NAIVE_NOTE,
        )
    if bg.status != "fitted":
        gg = status(
            "gamma_gamma",
            "Not fitted: no customer has a purchase, so there is no spend to model."
            if n == 0
            else "Not fitted because the BG/NBD was not fitted (see its row): the naive_rate "
            "fallback estimates spend per purchase day as the customer's average repeat spend "
            "shrunk toward the average repeat spend.",
        )
    else:
        fit_x, fit_m = fit_on["frequency"].to_numpy(), fit_on["monetary_value"].to_numpy()
        n_spend = int(((fit_x > 0) & (fit_m > 0)).sum())
        if n_spend < min_repeat_customers:
            gg = status(
                "gamma_gamma",
                f"Not fitted: {_count(n_spend, 'repeat buyer')} with a positive repeat spend "
                f"(Gamma-Gamma needs at least {min_repeat_customers:,}, min_repeat_customers). "
                f"{_MEAN_SPEND_NOTE} {_WAIT_NOTE}",
            )
        else:
            gg = _attempt_fit(
                "gamma_gamma",
                lambda: _fit_gamma_gamma(fit_on, method, time_unit, as_of, mcmc_kwargs),
                bounds,
                time_unit,
                as_of,
                _MEAN_SPEND_NOTE,
            )
    scorer = Scorer(
        as_of_date=as_of,
        time_unit=time_unit,
        bg_params=None if bg.used is None else dict(bg.used.params),
        gg_params=None if gg.used is None else dict(gg.used.params),
        mean_frequency=float(x.mean()) if n else 0.0,
        mean_T=float(prepared["T"].mean()) if n else 0.0,
        mean_spend=float(m[spend_ok].mean()) if spend_ok.any() else 0.0,
        churn_thresholds=thresholds,
        annual_discount_rate=annual_discount_rate,
        next_purchase_horizon_days=next_purchase_horizon_days,
    )
    return _Fits(scorer, bg, gg)


def run_predictions(
    features: Any,
    as_of_date: date | str,
    *,
    time_unit: TimeUnit = "day",
    method: FitMethod = "map",
    churn_thresholds: Mapping[str, float] | None = None,
    annual_discount_rate: float = 0.10,
    batch_size: int = DEFAULT_BATCH_SIZE,
    min_customers: int = DEFAULT_MIN_CUSTOMERS,
    min_repeat_customers: int = DEFAULT_MIN_REPEAT_CUSTOMERS,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    mcmc_kwargs: Mapping[str, Any] | None = None,
    next_purchase_horizon_days: float = 365.0,
    max_fit_customers: int | None = None,
    min_history_days: float = DEFAULT_MIN_HISTORY_DAYS,
) -> PredictionRun:
    """Fit, validate and score in one call: what the ``customer_predictions`` asset runs.

    ``features``: the input contract in days (DataFrame or DuckDB relation, e.g.
    ``read_customer_features``'s result). Never raises for a data reason: a model that cannot
    be fitted meaningfully is replaced by its fallback and its status and reason are in
    ``bg_status``/``gg_status`` and in ``params`` (module docstring, "Fallbacks"). Raises
    ``ValueError`` for a broken input contract or a wrong option, and ``FitError`` only if
    scoring produced a non-finite number (a bug: nothing should be written).
    """
    prepared = prepare_features(features, time_unit)
    as_of = _as_date(as_of_date)
    fits = _fit_models(
        prepared,
        as_of,
        time_unit,
        method,
        churn_thresholds,
        annual_discount_rate,
        min_customers,
        min_repeat_customers,
        bounds,
        mcmc_kwargs,
        next_purchase_horizon_days,
        max_fit_customers,
        min_history_days,
    )
    predictions = score_customers(prepared, fits.scorer, batch_size, prepared=True)
    if predictions.empty:
        predictions = _empty_predictions(prepared["customer_id"].dtype)
    return PredictionRun(
        predictions=predictions,
        params=model_params_table(fits.bg, fits.gg, as_of_date=as_of),
        scorer=fits.scorer,
        bg_fit=fits.bg.used,
        gg_fit=fits.gg.used,
        bg_status=fits.bg,
        gg_status=fits.gg,
    )


# --------------------------------------------------------------------------------------------
# Backtest
# --------------------------------------------------------------------------------------------


def _purchase_days(transactions: Any) -> pd.DataFrame:
    """(customer_id, day as int days since 1970-01-01, value summed over the day)."""
    df = _to_frame(transactions)
    missing = {"customer_id", "purchase_date", "value"} - set(df.columns)
    if missing:
        raise ValueError(
            f"transactions need columns customer_id, purchase_date, value; missing {missing}"
        )
    day = pd.to_datetime(df["purchase_date"]).to_numpy().astype("datetime64[D]").astype("int64")
    out = pd.DataFrame(
        {
            "customer_id": df["customer_id"].to_numpy(),
            "day": day,
            "value": pd.to_numeric(df["value"]).fillna(0.0).to_numpy(dtype="float64"),
        }
    )
    return out.groupby(["customer_id", "day"], as_index=False, sort=True)["value"].sum()


def _day_number(value: date | str) -> int:
    return int(np.datetime64(_as_date(value), "D").astype("int64"))


def _from_day_number(day: int) -> date:
    return date(1970, 1, 1) + timedelta(days=int(day))


def summarize_transactions(transactions: Any, as_of_date: date | str) -> pd.DataFrame:
    """Build the input contract (in days) from purchase days on or before ``as_of_date``.

    Same definitions as ``marts.customer_features``: frequency = distinct purchase days - 1,
    recency = last - first purchase day, T = as-of date - first purchase day, monetary_value =
    spend on repeat purchase days / their number (first day excluded; 0 if none).
    """
    days = _purchase_days(transactions)
    return _summarize_days(days, _day_number(as_of_date))


def _summarize_days(days: pd.DataFrame, as_of: int) -> pd.DataFrame:
    cal = days[days["day"] <= as_of]
    g = cal.groupby("customer_id", sort=True)
    first = g["day"].min()
    agg = pd.DataFrame(
        {
            "first": first,
            "last": g["day"].max(),
            "n": g["day"].size(),
            "total": g["value"].sum(),
            "first_value": g["value"].first(),  # rows are sorted by day within customer
        }
    )
    x = agg["n"] - 1
    repeat_spend = agg["total"] - agg["first_value"]
    return pd.DataFrame(
        {
            "customer_id": agg.index.to_numpy(),
            "frequency": x.to_numpy(dtype="float64"),
            "recency": (agg["last"] - agg["first"]).to_numpy(dtype="float64"),
            "T": (as_of - agg["first"]).to_numpy(dtype="float64"),
            "monetary_value": np.where(x > 0, repeat_spend / x.where(x > 0, 1), 0.0),
        }
    )


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve via the Mann-Whitney rank sum (ties averaged)."""
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = stats.rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _frequency_segment(x: np.ndarray) -> np.ndarray:
    xi = x.astype("int64")
    return np.where(xi >= 7, "frequency=7+", np.char.add("frequency=", xi.astype(str))).astype(
        object
    )


def backtest(
    transactions: Any,
    calibration_end: date | str,
    holdout_end: date | str,
    time_unit: TimeUnit = "day",
    *,
    method: FitMethod = "map",
    period_days: int = 7,
    churn_thresholds: Mapping[str, float] | None = None,
    min_customers: int = DEFAULT_MIN_CUSTOMERS,
    min_repeat_customers: int = DEFAULT_MIN_REPEAT_CUSTOMERS,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    min_history_days: float = DEFAULT_MIN_HISTORY_DAYS,
) -> pd.DataFrame:
    """Fit as of ``calibration_end``, predict (calibration_end, holdout_end], compare.

    ``transactions``: (customer_id, purchase_date, value); several rows on one day count as one
    purchase day. Customers whose first purchase is after ``calibration_end`` are not scored.
    The calibration fit follows ``run_predictions``'s fallback rules (the minimums apply to
    the calibration data), so the backtest measures whatever method the data allow. When
    nobody bought on or before ``calibration_end`` the result is the one-row skipped table
    (``backtest_status = 'skipped'``). ``run_backtest`` derives the windows from the data.

    Returns the long table ``marts.prediction_backtest`` (``BACKTEST_COLUMNS``):

    ===================  =====================================================================
    calibration_end,     the backtest window (DATE); time_unit of the fit;
    holdout_end,         prediction_method as in customer_predictions
    time_unit,
    prediction_method
    phase                ``calibration`` (in-sample fit) or ``holdout`` (out-of-sample)
    metric               see below
    segment              ``all``, ``frequency=0`` .. ``frequency=7+`` (calibration repeat days),
                         or the model name for ``param_*`` rows
    period_index,        per-period rows only (else NULL): consecutive ``period_days`` periods,
    period_start,        calibration periods end on calibration_end, holdout periods start the
    period_end           day after; both ends inclusive; the last holdout period may be short
    value                the number
    customers            customers behind the number (segment size)
    ===================  =====================================================================

    Metrics. Per period (plot ``value`` over ``period_start`` by ``metric``):
    ``repeat_purchases_actual`` / ``repeat_purchases_predicted`` (calibration: unconditional
    expectation per first-purchase cohort, FHL 2005 fig. 1; holdout: sum of each customer's
    conditional expectation), and ``cumulative_repeat_purchases_actual`` / ``_predicted`` over
    the whole timeline. Per customer over the holdout, by segment: ``mean_actual_purchases``,
    ``mean_predicted_purchases``, ``mae_purchases``, ``rmse_purchases``,
    ``mae_purchases_naive_baseline`` (x / T * holdout length, for reference). Ranking of
    P(buys in holdout) = 1 - P(X(h)=0) against whether they bought: ``auc_buys_again``,
    ``gini_buys_again`` (2 AUC - 1), ``top_decile_capture_buyers`` (share of holdout buyers among
    the top 10 % by score), ``top_decile_capture_purchases`` (share of holdout purchases made by
    the top 10 % by expected purchases), ``top_decile_lift``, ``buyer_rate``. Totals:
    ``total_purchases_actual``, ``total_purchases_predicted``,
    ``total_purchases_relative_error`` ((predicted - actual) / actual), ``total_value_actual``,
    ``total_value_predicted`` (expected purchases x expected spend). Fitted parameters:
    ``param_<name>`` (fitted models only). A metric that is undefined (e.g. AUC when nobody
    bought) is left out. ``backtest_status`` is ``ran`` on every row; ``status_reason`` is
    NULL when both models were fitted on the calibration data, else the reasons of the models
    that fell back (``prediction_method`` says which fallback was backtested).
    """
    cal_end, hold_end = _day_number(calibration_end), _day_number(holdout_end)
    if hold_end <= cal_end:
        raise ValueError(
            f"holdout_end ({holdout_end}) must be after calibration_end ({calibration_end})"
        )
    if period_days < 1:
        raise ValueError(f"period_days must be >= 1, got {period_days}")
    unit = TIME_UNITS[time_unit]
    days = _purchase_days(transactions)
    features = _summarize_days(days, cal_end)
    if features.empty:
        return _skipped_backtest(
            _from_day_number(cal_end),
            _from_day_number(hold_end),
            time_unit,
            f"Backtest skipped: no customer bought on or before calibration_end "
            f"{_from_day_number(cal_end)}, so there is nobody to predict. It runs once purchases "
            "before the holdout exist.",
        )
    prepared = prepare_features(features, time_unit)
    fits = _fit_models(
        prepared,
        _from_day_number(cal_end),
        time_unit,
        method,
        churn_thresholds,
        0.0,
        min_customers,
        min_repeat_customers,
        bounds,
        None,
        365.0,
        None,
        min_history_days,
    )
    scorer, bg_fit, gg_fit = fits.scorer, fits.bg.used, fits.gg.used
    fallbacks = [s.reason for s in (fits.bg, fits.gg) if s.status != "fitted" and s.reason]
    ids = prepared["customer_id"].to_numpy()
    x = prepared["frequency"].to_numpy()
    tx = prepared["recency"].to_numpy()
    T = prepared["T"].to_numpy()
    m = prepared["monetary_value"].to_numpy()
    first_day = cal_end - features["T"].to_numpy().astype("int64")
    n = len(ids)

    hold = days[(days["day"] > cal_end) & (days["day"] <= hold_end)]
    hold = hold[hold["customer_id"].isin(ids)]
    pos = pd.Index(ids).get_indexer(hold["customer_id"])
    actual = np.bincount(pos, minlength=n).astype("float64")
    actual_value = np.bincount(pos, weights=hold["value"].to_numpy(), minlength=n)

    h = (hold_end - cal_end) / unit
    p_alive = scorer.p_alive(x, tx, T)
    predicted = scorer.expected_purchases(h, x, tx, T, p_alive)
    p_buy = 1.0 - scorer.p_no_purchase(h, x, tx, T, p_alive)
    aov = scorer.expected_spend(x, m)

    rows: list[dict[str, Any]] = []

    def add(
        phase: str,
        metric: str,
        value: float,
        segment: str = "all",
        customers: int = n,
        period: tuple[int, int, int] | None = None,
    ) -> None:
        rows.append(
            {
                "phase": phase,
                "metric": metric,
                "segment": segment,
                "period_index": None if period is None else period[0],
                "period_start": None if period is None else _from_day_number(period[1]),
                "period_end": None if period is None else _from_day_number(period[2]),
                "value": float(value),
                "customers": int(customers),
            }
        )

    # ---- per-period aggregates -------------------------------------------------------------
    first_cal = int(first_day.min())
    n_cal = -(-(cal_end - first_cal + 1) // period_days)
    periods: list[tuple[str, int, int]] = []
    for j in range(n_cal, 0, -1):
        start = max(cal_end - j * period_days + 1, first_cal)
        periods.append(("calibration", start, cal_end - (j - 1) * period_days))
    start = cal_end + 1
    while start <= hold_end:
        periods.append(("holdout", start, min(start + period_days - 1, hold_end)))
        start += period_days

    is_repeat = days["day"].to_numpy() > days["customer_id"].map(
        pd.Series(first_day, index=ids)
    ).to_numpy(dtype="float64", na_value=np.inf)
    repeat_days = days.loc[is_repeat & (days["day"] <= hold_end), "day"].to_numpy()
    cohorts, cohort_size = np.unique(first_day, return_counts=True)

    @functools.cache
    def cal_expected(day: int) -> float:
        """Expected repeat purchase days up to and including ``day`` (all cohorts)."""
        t = np.clip(day - cohorts, 0, None) / unit
        return float(scorer.expected_purchases_new_customer(t) @ cohort_size)

    @functools.cache
    def hold_expected(day: int) -> float:
        """Expected holdout purchase days up to and including ``day`` (all customers)."""
        t = max(day - cal_end, 0) / unit
        return float(scorer.expected_purchases(t, x, tx, T, p_alive).sum())

    cum_actual = cum_pred = 0.0
    for k, (phase, start, end) in enumerate(periods):
        act = float(((repeat_days >= start) & (repeat_days <= end)).sum())
        if phase == "calibration":
            pred = cal_expected(end) - cal_expected(start - 1)
        else:
            pred = hold_expected(end) - hold_expected(start - 1)
        cum_actual += act
        cum_pred += pred
        period = (k, start, end)
        add(phase, "repeat_purchases_actual", act, period=period)
        add(phase, "repeat_purchases_predicted", pred, period=period)
        add(phase, "cumulative_repeat_purchases_actual", cum_actual, period=period)
        add(phase, "cumulative_repeat_purchases_predicted", cum_pred, period=period)

    # ---- per-customer errors by segment ----------------------------------------------------
    baseline = np.where(T > 0, x / np.where(T > 0, T, 1.0), 0.0) * h
    segments = _frequency_segment(x)
    for seg in ["all", *sorted(set(segments), key=lambda s: (len(s), s))]:
        mask = np.ones(n, dtype=bool) if seg == "all" else segments == seg
        k = int(mask.sum())
        err = predicted[mask] - actual[mask]
        add("holdout", "mean_actual_purchases", actual[mask].mean(), seg, k)
        add("holdout", "mean_predicted_purchases", predicted[mask].mean(), seg, k)
        add("holdout", "mae_purchases", np.abs(err).mean(), seg, k)
        add("holdout", "rmse_purchases", np.sqrt((err**2).mean()), seg, k)
        add(
            "holdout",
            "mae_purchases_naive_baseline",
            np.abs(baseline[mask] - actual[mask]).mean(),
            seg,
            k,
        )

    # ---- ranking ----------------------------------------------------------------------------
    bought = actual > 0
    auc = _auc(bought, p_buy)
    if auc is not None:
        add("holdout", "auc_buys_again", auc)
        add("holdout", "gini_buys_again", 2 * auc - 1)
    top_k = max(int(math.ceil(0.1 * n)), 1)
    top_by_p = np.argsort(-p_buy, kind="stable")[:top_k]
    top_by_e = np.argsort(-predicted, kind="stable")[:top_k]
    add("holdout", "buyer_rate", bought.mean())
    if bought.any():
        add(
            "holdout",
            "top_decile_capture_buyers",
            bought[top_by_p].sum() / bought.sum(),
            customers=top_k,
        )
        add("holdout", "top_decile_lift", bought[top_by_p].mean() / bought.mean(), customers=top_k)
        add(
            "holdout",
            "top_decile_capture_purchases",
            actual[top_by_e].sum() / actual.sum(),
            customers=top_k,
        )

    # ---- totals and parameters --------------------------------------------------------------
    add("holdout", "total_purchases_actual", actual.sum())
    add("holdout", "total_purchases_predicted", predicted.sum())
    if actual.sum() > 0:
        add(
            "holdout",
            "total_purchases_relative_error",
            (predicted.sum() - actual.sum()) / actual.sum(),
        )
    add("holdout", "total_value_actual", actual_value.sum())
    add("holdout", "total_value_predicted", float(predicted @ aov))
    for fit in (bg_fit, gg_fit):
        if fit is not None:
            for name, value in fit.params.items():
                add("calibration", f"param_{name}", value, fit.model, fit.customers_used)

    out = pd.DataFrame(rows)
    out.insert(0, "calibration_end", _from_day_number(cal_end))
    out.insert(1, "holdout_end", _from_day_number(hold_end))
    out.insert(2, "time_unit", time_unit)
    out.insert(3, "prediction_method", scorer.method)
    out["backtest_status"] = "ran"
    out["status_reason"] = "Calibration fit: " + " ".join(fallbacks) if fallbacks else None
    return _backtest_types(out)


def _backtest_types(out: pd.DataFrame) -> pd.DataFrame:
    """The column order and types of ``prediction_backtest``, also for all-NULL columns."""
    text = pd.ArrowDtype(pa.string())
    for c in ("calibration_end", "holdout_end", "period_start", "period_end"):
        out[c] = pd.array(list(out[c]), dtype=pd.ArrowDtype(pa.date32()))
    out = out.astype(
        {
            "time_unit": text,
            "prediction_method": text,
            "phase": text,
            "metric": text,
            "segment": text,
            "period_index": "Int64",
            "customers": "Int64",
            "backtest_status": text,
            "status_reason": text,
        }
    )
    if out["value"].isna().any():
        out["value"] = out["value"].astype("Float64")
    return out[list(BACKTEST_COLUMNS)]


def _skipped_backtest(
    calibration_end: date | None, holdout_end: date, time_unit: str, reason: str
) -> pd.DataFrame:
    """The one-row ``prediction_backtest`` of a skipped backtest: the windows (calibration_end
    NULL when none could be derived), ``backtest_status = 'skipped'`` and the reason; every
    metric column NULL."""
    row: dict[str, Any] = {c: None for c in BACKTEST_COLUMNS}
    row.update(
        calibration_end=calibration_end,
        holdout_end=holdout_end,
        time_unit=time_unit,
        backtest_status="skipped",
        status_reason=reason,
    )
    out = pd.DataFrame([row], columns=list(BACKTEST_COLUMNS))
    out["value"] = out["value"].astype("Float64")
    return _backtest_types(out)


@dataclass(frozen=True)
class BacktestWindows:
    """Windows derived from the data's span (``backtest_windows``).

    ``history_days`` = as-of date - first purchase day. ``holdout_days`` = min(configured
    holdout_days, floor(holdout_fraction * history_days)); ``calibration_end`` = as-of date -
    holdout_days; ``holdout_end`` = the as-of date. ``skip_reason`` is None when the backtest
    can run; ``calibration_end`` is None when there is no purchase at all.
    """

    first_purchase_date: date | None
    as_of_date: date
    history_days: int
    holdout_days: int
    calibration_end: date | None
    holdout_end: date
    min_history_days: int
    skip_reason: str | None = None


def min_backtest_history_days(
    holdout_days: int = DEFAULT_HOLDOUT_DAYS,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    min_calibration_days: int = DEFAULT_MIN_CALIBRATION_DAYS,
    min_holdout_days: int = DEFAULT_MIN_HOLDOUT_DAYS,
) -> int:
    """The shortest history (days from the first purchase to the as-of date) a backtest runs
    on with these settings (134 days with the defaults)."""
    if min_holdout_days > holdout_days:
        raise ValueError(
            f"min_holdout_days ({min_holdout_days}) is above holdout_days ({holdout_days}): no "
            "history is long enough; lower min_holdout_days or raise holdout_days"
        )
    days = 0
    while True:
        hold = min(holdout_days, math.floor(days * holdout_fraction))
        if hold >= min_holdout_days and days - hold >= min_calibration_days:
            return days
        days += 1


def backtest_windows(
    first_purchase_date: date | str | None,
    as_of_date: date | str,
    holdout_days: int = DEFAULT_HOLDOUT_DAYS,
    *,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    min_calibration_days: int = DEFAULT_MIN_CALIBRATION_DAYS,
    min_holdout_days: int = DEFAULT_MIN_HOLDOUT_DAYS,
) -> BacktestWindows:
    """Calibration and holdout windows from the data's span, or the reason to skip.

    The holdout ends on the as-of date and lasts min(``holdout_days``, floor(
    ``holdout_fraction`` x history days)) days, so a short history keeps most of its days for
    the calibration fit. Skipped (``skip_reason`` set) when there is no purchase, or when the
    holdout would be shorter than ``min_holdout_days`` or the calibration period shorter than
    ``min_calibration_days`` (defaults: 28 and 90 days, i.e. at least 134 days of history).
    """
    if holdout_days < 1:
        raise ValueError(f"holdout_days must be >= 1, got {holdout_days}")
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be between 0 and 1, got {holdout_fraction}")
    as_of = _as_date(as_of_date)
    needed = min_backtest_history_days(
        holdout_days, holdout_fraction, min_calibration_days, min_holdout_days
    )
    if first_purchase_date is None:
        return BacktestWindows(
            None,
            as_of,
            0,
            0,
            None,
            as_of,
            needed,
            f"Backtest skipped: no customer bought on or before the as-of date {as_of}. It "
            f"runs once the purchase history covers at least {needed} days.",
        )
    first = _as_date(first_purchase_date)
    history = (as_of - first).days
    hold = min(holdout_days, math.floor(max(history, 0) * holdout_fraction))
    reason = None
    if hold < min_holdout_days or history - hold < min_calibration_days:
        reason = (
            f"Backtest skipped: the purchase history covers {_count(history, 'day')} (first "
            f"purchase {first}, as-of date {as_of}); a backtest needs a calibration period of "
            f"at least {min_calibration_days} days and a holdout of at least "
            f"{min_holdout_days} days, and the holdout is at most {holdout_fraction:.0%} of the "
            f"history (at most {holdout_days} days), so at least {needed} days of history. It "
            "runs automatically once the history is long enough."
        )
    return BacktestWindows(
        first, as_of, history, hold, as_of - timedelta(days=hold), as_of, needed, reason
    )


@dataclass
class BacktestRun:
    """Result of ``run_backtest``: the ``prediction_backtest`` table and how it came about."""

    table: pd.DataFrame
    windows: BacktestWindows

    @property
    def status(self) -> str:
        return str(self.table["backtest_status"].iloc[0])

    @property
    def skipped(self) -> bool:
        return self.status == "skipped"

    @property
    def reason(self) -> str | None:
        value = self.table["status_reason"].iloc[0]
        return None if pd.isna(value) else str(value)

    @property
    def prediction_method(self) -> str | None:
        value = self.table["prediction_method"].iloc[0]
        return None if pd.isna(value) else str(value)


def run_backtest(
    transactions: Any,
    as_of_date: date | str,
    *,
    holdout_days: int = DEFAULT_HOLDOUT_DAYS,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    min_calibration_days: int = DEFAULT_MIN_CALIBRATION_DAYS,
    min_holdout_days: int = DEFAULT_MIN_HOLDOUT_DAYS,
    time_unit: TimeUnit = "day",
    **backtest_kwargs: Any,
) -> BacktestRun:
    """The backtest the ``prediction_backtest`` asset runs: windows from the data's span
    (``backtest_windows``; purchase days after the as-of date are ignored), then ``backtest``,
    or the one-row skipped table with the reason. ``backtest_kwargs`` go to ``backtest``.
    Never raises for a data reason."""
    as_of = _as_date(as_of_date)
    days = _purchase_days(transactions)
    days = days[days["day"] <= _day_number(as_of)]
    first = None if days.empty else _from_day_number(int(days["day"].min()))
    windows = backtest_windows(
        first,
        as_of,
        holdout_days,
        holdout_fraction=holdout_fraction,
        min_calibration_days=min_calibration_days,
        min_holdout_days=min_holdout_days,
    )
    if windows.skip_reason is not None:
        table = _skipped_backtest(None, as_of, time_unit, windows.skip_reason)
        return BacktestRun(table, windows)
    assert windows.calibration_end is not None
    renamed = days.assign(purchase_date=pd.to_datetime(days["day"], unit="D"))
    table = backtest(
        renamed[["customer_id", "purchase_date", "value"]],
        windows.calibration_end,
        as_of,
        time_unit,
        **backtest_kwargs,
    )
    return BacktestRun(table, windows)


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
