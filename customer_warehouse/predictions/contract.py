"""The prediction tables' contract: input features, output columns, fit results and statuses.

Reads ``marts.customer_features`` (``read_customer_features``) and checks any feature frame
(``prepare_features``); builds the rows of ``marts.clv_model_params`` (``model_params_table``).
Writes nothing itself: the Dagster assets write the tables (``warehouse.replace_tables``).

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

"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

TimeUnit = Literal["day", "week"]
FitMethod = Literal["map", "mcmc"]

#: Days per time unit.
TIME_UNITS: dict[str, float] = {"day": 1.0, "week": 7.0}
BG_NBD_PARAMS: tuple[str, ...] = ("r", "alpha", "a", "b")
GAMMA_GAMMA_PARAMS: tuple[str, ...] = ("p", "q", "v")
FEATURE_COLUMNS: tuple[str, ...] = ("customer_id", "frequency", "recency", "T", "monetary_value")

PREDICTION_METHODS: tuple[str, ...] = ("bg_nbd", "bg_nbd_mean_spend", "naive_rate")
DEFAULT_BATCH_SIZE = 200_000
MONTH_DAYS = 365.0 / 12.0

#: Numeric columns of ``marts.customer_predictions``: never NaN, infinite or NULL.
NUMERIC_PREDICTION_COLUMNS: tuple[str, ...] = (
    "p_alive",
    "expected_purchases_30d",
    "expected_purchases_90d",
    "expected_purchases_365d",
    "p_no_purchase_90d",
    "expected_avg_order_value",
    "clv_12m",
)
PREDICTION_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "as_of_date",
    *NUMERIC_PREDICTION_COLUMNS,
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


def _arr(v: Any) -> np.ndarray:
    return np.asarray(v, dtype="float64")


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


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
