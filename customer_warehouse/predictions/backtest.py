"""The backtest: fit as of a calibration end, predict the holdout, compare with what happened.

Reads transactions (customer_id, purchase_date, value; ``summary.read_purchase_days``) and the
two window ends; returns the rows of ``marts.prediction_backtest`` (``BACKTEST_COLUMNS``, below).
Writes no table: ``run_backtest``
(``backtest_windows``) derives the windows and the ``prediction_backtest`` asset writes them.
The calibration fit is ``fitting._fit_models``, so the backtest measures the method the data
allow, fallbacks included.

The long table ``marts.prediction_backtest`` (``BACKTEST_COLUMNS``):

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

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats

from customer_warehouse.predictions.contract import (
    BACKTEST_COLUMNS,
    DEFAULT_MIN_CUSTOMERS,
    DEFAULT_MIN_HISTORY_DAYS,
    DEFAULT_MIN_REPEAT_CUSTOMERS,
    TIME_UNITS,
    FitMethod,
    TimeUnit,
    prepare_features,
)
from customer_warehouse.predictions.fitting import FitOptions, _fit_models, _Fits
from customer_warehouse.predictions.scoring import Scorer
from customer_warehouse.predictions.summary import (
    _day_number,
    _from_day_number,
    _purchase_days,
    _summarize_days,
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

    Returns the long table ``marts.prediction_backtest`` (module docstring).
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
    opts = FitOptions(
        time_unit=time_unit,
        method=method,
        churn_thresholds=churn_thresholds,
        annual_discount_rate=0.0,
        min_customers=min_customers,
        min_repeat_customers=min_repeat_customers,
        bounds=bounds,
        min_history_days=min_history_days,
    )
    prepared = prepare_features(features, time_unit)
    fits = _fit_models(prepared, _from_day_number(cal_end), opts)
    first_day = cal_end - features["T"].to_numpy().astype("int64")
    hold = _holdout(prepared, days, fits.scorer, cal_end, hold_end, unit)
    rows = _Rows(len(hold.x))
    _period_rows(rows, days, hold, first_day, fits.scorer, period_days)
    _segment_rows(rows, hold)
    _ranking_rows(rows, hold)
    _total_rows(rows, hold, fits)
    return _finish(rows, cal_end, hold_end, time_unit, fits)


@dataclass(frozen=True)
class _Holdout:
    """The calibration customers (features in the time unit), what they did in the holdout
    and what the calibration fit predicted for it (``h``: holdout length in the time unit)."""

    cal_end: int
    hold_end: int
    unit: float
    ids: np.ndarray
    x: np.ndarray
    tx: np.ndarray
    T: np.ndarray
    actual: np.ndarray
    actual_value: np.ndarray
    h: float
    p_alive: np.ndarray
    predicted: np.ndarray
    p_buy: np.ndarray
    aov: np.ndarray


def _holdout(
    prepared: pd.DataFrame,
    days: pd.DataFrame,
    scorer: Scorer,
    cal_end: int,
    hold_end: int,
    unit: float,
) -> _Holdout:
    ids = prepared["customer_id"].to_numpy()
    x = prepared["frequency"].to_numpy()
    tx = prepared["recency"].to_numpy()
    T = prepared["T"].to_numpy()
    m = prepared["monetary_value"].to_numpy()
    n = len(ids)
    hold = days[(days["day"] > cal_end) & (days["day"] <= hold_end)]
    hold = hold[hold["customer_id"].isin(ids)]
    pos = pd.Index(ids).get_indexer(hold["customer_id"])
    actual = np.bincount(pos, minlength=n).astype("float64")
    actual_value = np.bincount(pos, weights=hold["value"].to_numpy(), minlength=n)
    h = (hold_end - cal_end) / unit
    p_alive = scorer.p_alive(x, tx, T)
    return _Holdout(
        cal_end=cal_end,
        hold_end=hold_end,
        unit=unit,
        ids=ids,
        x=x,
        tx=tx,
        T=T,
        actual=actual,
        actual_value=actual_value,
        h=h,
        p_alive=p_alive,
        predicted=scorer.expected_purchases(h, x, tx, T, p_alive),
        p_buy=1.0 - scorer.p_no_purchase(h, x, tx, T, p_alive),
        aov=scorer.expected_spend(x, m),
    )


class _Rows(list):
    """The metric rows of one backtest; ``customers`` defaults to everyone scored (``n``)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def add(
        self,
        phase: str,
        metric: str,
        value: float,
        segment: str = "all",
        customers: int | None = None,
        period: tuple[int, int, int] | None = None,
    ) -> None:
        self.append(
            {
                "phase": phase,
                "metric": metric,
                "segment": segment,
                "period_index": None if period is None else period[0],
                "period_start": None if period is None else _from_day_number(period[1]),
                "period_end": None if period is None else _from_day_number(period[2]),
                "value": float(value),
                "customers": int(self.n if customers is None else customers),
            }
        )


def _periods(first_cal: int, cal_end: int, hold_end: int, period_days: int) -> list:
    """Consecutive periods: calibration ones end on cal_end, holdout ones start the day after
    (both ends inclusive; the first and the last may be short)."""
    n_cal = -(-(cal_end - first_cal + 1) // period_days)
    periods: list[tuple[str, int, int]] = []
    for j in range(n_cal, 0, -1):
        start = max(cal_end - j * period_days + 1, first_cal)
        periods.append(("calibration", start, cal_end - (j - 1) * period_days))
    start = cal_end + 1
    while start <= hold_end:
        periods.append(("holdout", start, min(start + period_days - 1, hold_end)))
        start += period_days
    return periods


def _period_rows(
    rows: _Rows,
    days: pd.DataFrame,
    hold: _Holdout,
    first_day: np.ndarray,
    scorer: Scorer,
    period_days: int,
) -> None:
    """Actual and predicted repeat purchase days per period, and their running totals."""
    cal_end, unit = hold.cal_end, hold.unit
    periods = _periods(int(first_day.min()), cal_end, hold.hold_end, period_days)
    is_repeat = days["day"].to_numpy() > days["customer_id"].map(
        pd.Series(first_day, index=hold.ids)
    ).to_numpy(dtype="float64", na_value=np.inf)
    repeat_days = days.loc[is_repeat & (days["day"] <= hold.hold_end), "day"].to_numpy()
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
        return float(scorer.expected_purchases(t, hold.x, hold.tx, hold.T, hold.p_alive).sum())

    cum_actual = cum_pred = 0.0
    for k, (phase, start, end) in enumerate(periods):
        act = float(((repeat_days >= start) & (repeat_days <= end)).sum())
        expected = cal_expected if phase == "calibration" else hold_expected
        pred = expected(end) - expected(start - 1)
        cum_actual += act
        cum_pred += pred
        period = (k, start, end)
        rows.add(phase, "repeat_purchases_actual", act, period=period)
        rows.add(phase, "repeat_purchases_predicted", pred, period=period)
        rows.add(phase, "cumulative_repeat_purchases_actual", cum_actual, period=period)
        rows.add(phase, "cumulative_repeat_purchases_predicted", cum_pred, period=period)


def _segment_rows(rows: _Rows, hold: _Holdout) -> None:
    """Per-customer holdout errors, for everyone and by calibration frequency."""
    x, T, actual, predicted = hold.x, hold.T, hold.actual, hold.predicted
    baseline = np.where(T > 0, x / np.where(T > 0, T, 1.0), 0.0) * hold.h
    segments = _frequency_segment(x)
    for seg in ["all", *sorted(set(segments), key=lambda s: (len(s), s))]:
        mask = np.ones(len(x), dtype=bool) if seg == "all" else segments == seg
        k = int(mask.sum())
        err = predicted[mask] - actual[mask]
        rows.add("holdout", "mean_actual_purchases", actual[mask].mean(), seg, k)
        rows.add("holdout", "mean_predicted_purchases", predicted[mask].mean(), seg, k)
        rows.add("holdout", "mae_purchases", np.abs(err).mean(), seg, k)
        rows.add("holdout", "rmse_purchases", np.sqrt((err**2).mean()), seg, k)
        rows.add(
            "holdout",
            "mae_purchases_naive_baseline",
            np.abs(baseline[mask] - actual[mask]).mean(),
            seg,
            k,
        )


def _ranking_rows(rows: _Rows, hold: _Holdout) -> None:
    """How well P(buys in the holdout) and expected purchases rank who bought."""
    actual, n = hold.actual, len(hold.actual)
    bought = actual > 0
    auc = _auc(bought, hold.p_buy)
    if auc is not None:
        rows.add("holdout", "auc_buys_again", auc)
        rows.add("holdout", "gini_buys_again", 2 * auc - 1)
    top_k = max(int(math.ceil(0.1 * n)), 1)
    top_by_p = np.argsort(-hold.p_buy, kind="stable")[:top_k]
    top_by_e = np.argsort(-hold.predicted, kind="stable")[:top_k]
    rows.add("holdout", "buyer_rate", bought.mean())
    if bought.any():
        share = bought[top_by_p].sum() / bought.sum()
        rows.add("holdout", "top_decile_capture_buyers", share, customers=top_k)
        lift = bought[top_by_p].mean() / bought.mean()
        rows.add("holdout", "top_decile_lift", lift, customers=top_k)
        captured = actual[top_by_e].sum() / actual.sum()
        rows.add("holdout", "top_decile_capture_purchases", captured, customers=top_k)


def _total_rows(rows: _Rows, hold: _Holdout, fits: _Fits) -> None:
    """Holdout totals and the calibration fit's parameters."""
    actual, predicted = hold.actual, hold.predicted
    rows.add("holdout", "total_purchases_actual", actual.sum())
    rows.add("holdout", "total_purchases_predicted", predicted.sum())
    if actual.sum() > 0:
        error = (predicted.sum() - actual.sum()) / actual.sum()
        rows.add("holdout", "total_purchases_relative_error", error)
    rows.add("holdout", "total_value_actual", hold.actual_value.sum())
    rows.add("holdout", "total_value_predicted", float(predicted @ hold.aov))
    for fit in (fits.bg.used, fits.gg.used):
        if fit is not None:
            for name, value in fit.params.items():
                rows.add("calibration", f"param_{name}", value, fit.model, fit.customers_used)


def _finish(rows: _Rows, cal_end: int, hold_end: int, time_unit: str, fits: _Fits) -> pd.DataFrame:
    """The rows as ``prediction_backtest``: windows, method, status and reason on every row."""
    fallbacks = [s.reason for s in (fits.bg, fits.gg) if s.status != "fitted" and s.reason]
    out = pd.DataFrame(rows)
    out.insert(0, "calibration_end", _from_day_number(cal_end))
    out.insert(1, "holdout_end", _from_day_number(hold_end))
    out.insert(2, "time_unit", time_unit)
    out.insert(3, "prediction_method", fits.scorer.method)
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
