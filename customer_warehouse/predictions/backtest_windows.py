"""Backtest windows from the data's span, and ``run_backtest`` (what the asset runs).

Reads transactions (customer_id, purchase_date, value) and the as-of date; returns a
``BacktestRun``: the rows of ``marts.prediction_backtest`` (from ``backtest.backtest``, or the
one-row skipped table) and the windows. Writes no table (the ``prediction_backtest`` asset does).

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
row has ``backtest_status = 'ran'``; the calibration fit follows the fallback rules (package
docstring), so a young shop's backtest measures the fallback it actually uses
(``prediction_method``; ``status_reason`` then holds the calibration fit's reasons, NULL when
both models were fitted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pandas as pd

from customer_warehouse.predictions.backtest import _skipped_backtest, backtest
from customer_warehouse.predictions.contract import (
    DEFAULT_HOLDOUT_DAYS,
    DEFAULT_HOLDOUT_FRACTION,
    DEFAULT_MIN_CALIBRATION_DAYS,
    DEFAULT_MIN_HOLDOUT_DAYS,
    TimeUnit,
    _as_date,
    _count,
)
from customer_warehouse.predictions.summary import _day_number, _from_day_number, _purchase_days


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
