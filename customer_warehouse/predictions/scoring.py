"""Scoring: one row of ``marts.customer_predictions`` per customer, batch by batch.

Reads prepared features (a DataFrame, a DuckDB relation streamed with ``to_arrow_reader``, or
an iterable of DataFrames) and a ``Scorer`` (the fitted parameters, or the fallbacks'
population statistics, fixed before the first batch); returns prediction frames
(``PREDICTION_COLUMNS``). Writes no table.

* Next purchase: the median waiting time to the next purchase given alive solves
  ((alpha+T)/(alpha+T+w))^(r+x) = 1/2, so w = (alpha + T) * (2^(1/(r+x)) - 1). The median is used
  because the mean, (alpha+T)/(r+x-1), is infinite when r + x <= 1 (every one-time buyer with
  r < 1). ``predicted_next_purchase_date`` = as-of date + ceil(w in days) (at least 1 day); NULL
  when P(alive) is below the ``high`` band threshold (band ``lost``) or when w is beyond
  ``next_purchase_horizon_days`` (default 365: "no purchase expected within a year").
* clv_12m = sum_{m=1..12} AOV * (E[X(m * L)] - E[X((m - 1) * L)]) / (1 + d)^m with month length
  L = 365/12 days and monthly rate d = (1 + annual_discount_rate)^(1/12) - 1 (default 10 %/year):
  expected purchases per month times expected value, discounted at each month's end (the
  ``lifetimes`` convention). Undiscounted, clv_12m = AOV * expected_purchases_365d.
* churn_risk_band: see ``churn`` (thresholds from the seed ``churn_risk_bands``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from customer_warehouse.predictions.beta_geo import (
    bg_nbd_expected_purchases,
    bg_nbd_median_wait,
    bg_nbd_p_alive,
    bg_nbd_p_no_purchase,
)
from customer_warehouse.predictions.churn import (
    churn_band,
    default_churn_thresholds,
    validate_churn_thresholds,
)
from customer_warehouse.predictions.contract import (
    DEFAULT_BATCH_SIZE,
    MONTH_DAYS,
    PREDICTION_COLUMNS,
    TIME_UNITS,
    FitError,
    _arr,
    prepare_features,
)
from customer_warehouse.predictions.gamma_gamma import gamma_gamma_expected_spend
from customer_warehouse.predictions.naive import NaiveRate, shrunk_mean_spend


def monthly_discount_factors(annual_discount_rate: float, months: int = 12) -> np.ndarray:
    """1 / (1 + d)^m for m = 1..months, d = (1 + annual)^(1/12) - 1 (month-end discounting)."""
    if annual_discount_rate <= -1:
        raise ValueError("annual_discount_rate must be > -1 (0.10 means 10 % per year)")
    d = (1.0 + annual_discount_rate) ** (1.0 / 12.0) - 1.0
    return 1.0 / (1.0 + d) ** np.arange(1, months + 1)


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
    churn_thresholds: dict[str, float] = field(default_factory=default_churn_thresholds)
    annual_discount_rate: float = 0.10
    next_purchase_horizon_days: float = 365.0

    @property
    def method(self) -> str:
        """The ``prediction_method`` value of every row this scorer writes."""
        if self.bg_params is None:
            return "naive_rate"
        return "bg_nbd" if self.gg_params is not None else "bg_nbd_mean_spend"

    @property
    def _naive(self) -> NaiveRate:
        return NaiveRate(self.mean_frequency, self.mean_T)

    def p_alive(self, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> np.ndarray:
        if self.bg_params is not None:
            return bg_nbd_p_alive(self.bg_params, x, tx, T)
        return self._naive.p_alive(x, tx, T)

    def expected_purchases(self, t: Any, x, tx, T, p_alive: np.ndarray) -> np.ndarray:
        if self.bg_params is not None:
            return bg_nbd_expected_purchases(self.bg_params, t, x, tx, T, p_alive)
        return self._naive.expected_purchases(t, x, T, p_alive)

    def expected_purchases_new_customer(self, t: Any) -> np.ndarray:
        """E[X(t)] for a customer who just made a first purchase (FHL 2005 eq. 9)."""
        t = _arr(t)
        if self.bg_params is not None:
            zero = np.zeros_like(t)
            return bg_nbd_expected_purchases(self.bg_params, t, zero, zero, zero)
        return self._naive.expected_purchases_new_customer(t)

    def p_no_purchase(self, t: Any, x, tx, T, p_alive: np.ndarray) -> np.ndarray:
        if self.bg_params is not None:
            return bg_nbd_p_no_purchase(self.bg_params, t, x, tx, T, p_alive)
        return self._naive.p_no_purchase(t, x, T, p_alive)

    def median_wait(self, x: np.ndarray, T: np.ndarray) -> np.ndarray:
        if self.bg_params is not None:
            return bg_nbd_median_wait(self.bg_params, x, T)
        return self._naive.median_wait(x, T)

    def expected_spend(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        if self.gg_params is not None:
            return gamma_gamma_expected_spend(self.gg_params, x, m)
        return shrunk_mean_spend(x, m, self.mean_spend)

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
