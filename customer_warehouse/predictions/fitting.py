"""Fitting with fallbacks, and the one-shot ``run_predictions`` (fit, validate, score).

Reads the input contract in days (``marts.customer_features`` via
``contract.read_customer_features``, or ``summary.summarize_transactions``); returns the rows
of ``marts.customer_predictions`` and ``marts.clv_model_params`` (``PredictionRun``), which the
``customer_predictions`` asset writes. The fallback ladder (which model is fitted, which
fallback is used, and why) is in the package docstring, "Fallbacks"; ``_fit_models`` is it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd

from customer_warehouse.predictions import contract
from customer_warehouse.predictions.beta_geo import _fit_bg_nbd
from customer_warehouse.predictions.churn import validate_churn_thresholds
from customer_warehouse.predictions.contract import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MIN_CUSTOMERS,
    DEFAULT_MIN_HISTORY_DAYS,
    DEFAULT_MIN_REPEAT_CUSTOMERS,
    FitError,
    FitResult,
    ModelStatus,
    _as_date,
    _count,
    model_params_table,
    prepare_features,
)
from customer_warehouse.predictions.estimation import validate_fit
from customer_warehouse.predictions.gamma_gamma import _fit_gamma_gamma
from customer_warehouse.predictions.scoring import Scorer, _empty_predictions, score_customers


@dataclass(frozen=True)
class FitOptions:
    """The options of ``fit_models`` / ``run_predictions`` (keyword arguments of both).

    ``max_fit_customers``: fit on a random sample of that many customers (fixed seed 0) when
    there are more; everyone is still scored, ``customers_used`` reports the sample size. The
    minimums and ``bounds`` decide the fallbacks (package docstring, "Fallbacks").
    """

    time_unit: contract.TimeUnit = "day"
    method: contract.FitMethod = "map"
    churn_thresholds: Mapping[str, float] | None = None
    annual_discount_rate: float = 0.10
    min_customers: int = DEFAULT_MIN_CUSTOMERS
    min_repeat_customers: int = DEFAULT_MIN_REPEAT_CUSTOMERS
    bounds: Mapping[str, tuple[float, float]] | None = None
    mcmc_kwargs: Mapping[str, Any] | None = None
    next_purchase_horizon_days: float = 365.0
    max_fit_customers: int | None = None
    min_history_days: float = DEFAULT_MIN_HISTORY_DAYS


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
    features: Any, as_of_date: date | str, **options: Any
) -> tuple[Scorer, FitResult | None, FitResult | None]:
    """Fit what the data support, validate, and build the ``Scorer`` (features in days).

    ``options``: the fields of ``FitOptions`` (time_unit, method, churn_thresholds, the
    minimums, bounds, max_fit_customers, ...). Returns the scorer and the fits it uses (None
    for a model that is not used); the rules are those of ``run_predictions``, which also
    reports each model's status and reason. Never raises for a data reason.
    See benchmarks/bench_predictions.py for the ``max_fit_customers`` trade-off.
    """
    opts = FitOptions(**options)
    fits = _fit_models(prepare_features(features, opts.time_unit), _as_date(as_of_date), opts)
    return fits.scorer, fits.bg.used, fits.gg.used


def _fit_models(prepared: pd.DataFrame, as_of: date, opts: FitOptions) -> _Fits:
    """The fallback ladder of the package docstring. Option errors raise ``ValueError``."""
    if opts.method not in ("map", "mcmc"):
        raise ValueError(f"method must be 'map' or 'mcmc', got {opts.method!r}")
    thresholds = validate_churn_thresholds(opts.churn_thresholds)
    fit_on = prepared
    if opts.max_fit_customers is not None and len(prepared) > opts.max_fit_customers:
        fit_on = prepared.sample(n=opts.max_fit_customers, random_state=0)
    bg = _bg_status(prepared, fit_on, as_of, opts)
    gg = _gg_status(fit_on, len(prepared), bg, as_of, opts)
    return _Fits(_scorer(prepared, as_of, opts, thresholds, bg, gg), bg, gg)


def _not_attempted(
    model: Literal["bg_nbd", "gamma_gamma"], reason: str, as_of: date, opts: FitOptions
) -> ModelStatus:
    return ModelStatus(model, "not_attempted", opts.time_unit, as_of, reason)


def _bg_status(
    prepared: pd.DataFrame, fit_on: pd.DataFrame, as_of: date, opts: FitOptions
) -> ModelStatus:
    """The BG/NBD rung: not attempted below the minimums, else fitted on ``fit_on`` and
    validated (``fallback`` when rejected)."""
    x = prepared["frequency"].to_numpy()
    T_days = prepared["T"].to_numpy() * contract.TIME_UNITS[opts.time_unit]
    n, n_repeat = len(prepared), int((x > 0).sum())
    span_days = float(T_days.max()) if n else 0.0
    first_purchase = as_of - timedelta(days=int(round(span_days))) if n else None
    short = _bg_requirements(
        n,
        n_repeat,
        first_purchase,
        as_of,
        span_days,
        opts.min_customers,
        opts.min_repeat_customers,
        opts.min_history_days,
    )
    if short is not None:
        note = "" if n == 0 else f"{_NAIVE_NOTE} {_WAIT_NOTE}"
        return _not_attempted("bg_nbd", (short + note).strip(), as_of, opts)
    return _attempt_fit(
        "bg_nbd",
        lambda: _fit_bg_nbd(fit_on, opts.method, opts.time_unit, as_of, opts.mcmc_kwargs),
        opts.bounds,
        opts.time_unit,
        as_of,
        _NAIVE_NOTE,
    )


def _gg_status(
    fit_on: pd.DataFrame, n: int, bg: ModelStatus, as_of: date, opts: FitOptions
) -> ModelStatus:
    """The Gamma-Gamma rung: only on a fitted BG/NBD and enough repeat buyers with a spend."""
    if bg.status != "fitted":
        return _not_attempted(
            "gamma_gamma",
            "Not fitted: no customer has a purchase, so there is no spend to model."
            if n == 0
            else "Not fitted because the BG/NBD was not fitted (see its row): the naive_rate "
            "fallback estimates spend per purchase day as the customer's average repeat spend "
            "shrunk toward the average repeat spend.",
            as_of,
            opts,
        )
    fit_x, fit_m = fit_on["frequency"].to_numpy(), fit_on["monetary_value"].to_numpy()
    n_spend = int(((fit_x > 0) & (fit_m > 0)).sum())
    if n_spend < opts.min_repeat_customers:
        return _not_attempted(
            "gamma_gamma",
            f"Not fitted: {_count(n_spend, 'repeat buyer')} with a positive repeat spend "
            f"(Gamma-Gamma needs at least {opts.min_repeat_customers:,}, min_repeat_customers). "
            f"{_MEAN_SPEND_NOTE} {_WAIT_NOTE}",
            as_of,
            opts,
        )
    return _attempt_fit(
        "gamma_gamma",
        lambda: _fit_gamma_gamma(fit_on, opts.method, opts.time_unit, as_of, opts.mcmc_kwargs),
        opts.bounds,
        opts.time_unit,
        as_of,
        _MEAN_SPEND_NOTE,
    )


def _scorer(
    prepared: pd.DataFrame,
    as_of: date,
    opts: FitOptions,
    thresholds: dict[str, float],
    bg: ModelStatus,
    gg: ModelStatus,
) -> Scorer:
    """The scorer of the models used, with the population statistics of all customers."""
    n = len(prepared)
    x = prepared["frequency"].to_numpy()
    m = prepared["monetary_value"].to_numpy()
    spend_ok = (x > 0) & (m > 0)
    return Scorer(
        as_of_date=as_of,
        time_unit=opts.time_unit,
        bg_params=None if bg.used is None else dict(bg.used.params),
        gg_params=None if gg.used is None else dict(gg.used.params),
        mean_frequency=float(x.mean()) if n else 0.0,
        mean_T=float(prepared["T"].mean()) if n else 0.0,
        mean_spend=float(m[spend_ok].mean()) if spend_ok.any() else 0.0,
        churn_thresholds=thresholds,
        annual_discount_rate=opts.annual_discount_rate,
        next_purchase_horizon_days=opts.next_purchase_horizon_days,
    )


def run_predictions(
    features: Any, as_of_date: date | str, *, batch_size: int = DEFAULT_BATCH_SIZE, **options: Any
) -> PredictionRun:
    """Fit, validate and score in one call: what the ``customer_predictions`` asset runs.

    ``features``: the input contract in days (DataFrame or DuckDB relation, e.g.
    ``read_customer_features``'s result); ``options``: the fields of ``FitOptions``. Never
    raises for a data reason: a model that cannot be fitted meaningfully is replaced by its
    fallback and its status and reason are in ``bg_status``/``gg_status`` and in ``params``
    (package docstring, "Fallbacks"). Raises ``ValueError`` for a broken input contract or a
    wrong option, and ``FitError`` only if scoring produced a non-finite number (a bug:
    nothing should be written).
    """
    opts = FitOptions(**options)
    prepared = prepare_features(features, opts.time_unit)
    as_of = _as_date(as_of_date)
    fits = _fit_models(prepared, as_of, opts)
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
