"""Shared by the odd-shop prediction tests (tests/test_prediction_fallbacks*.py): small synthetic
inputs built here (not the demo generator), so each shape is exactly what its name says, and
checks of what the predictions say."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from customer_warehouse import predictions as P
from customer_warehouse.predictions.contract import NUMERIC_PREDICTION_COLUMNS

AS_OF = date(2025, 6, 30)
TRUTH = {"r": 0.25, "alpha": 30.0, "a": 0.8, "b": 2.5}
GG_TRUTH = {"p": 6.0, "q": 4.0, "v": 15.0}
NUMERIC = list(NUMERIC_PREDICTION_COLUMNS)


def features(x, tx, T, m=None, prefix: str = "c") -> pd.DataFrame:
    """The input contract (days) from arrays of frequency, recency, T (and spend)."""
    x = np.asarray(x, dtype="float64")
    return pd.DataFrame(
        {
            "customer_id": [f"{prefix}{i:04d}" for i in range(x.size)],
            "frequency": x,
            "recency": np.asarray(tx, dtype="float64"),
            "T": np.asarray(T, dtype="float64"),
            "monetary_value": np.zeros(x.size) if m is None else np.asarray(m, dtype="float64"),
        }
    )


def assert_sane_predictions(run: P.PredictionRun, n: int, method: str) -> None:
    out = run.predictions
    assert list(out.columns) == list(P.PREDICTION_COLUMNS)
    assert len(out) == n and out["customer_id"].is_unique
    assert np.isfinite(out[NUMERIC].to_numpy(dtype="float64")).all()
    assert (out["prediction_method"] == method).all()
    assert out["churn_risk_band"].isin(P.CHURN_BANDS).all()
    assert out["p_alive"].between(0, 1).all() and out["p_no_purchase_90d"].between(0, 1).all()


def status_rows(run: P.PredictionRun) -> dict[str, pd.Series]:
    params = run.params
    assert list(params.columns) == list(P.PARAM_COLUMNS)
    assert set(params["model"]) == {"bg_nbd", "gamma_gamma"}
    return {model: rows.iloc[0] for model, rows in params.groupby("model")}


def purchase_days(n: int, first: date, last: date, seed: int = 0) -> pd.DataFrame:
    """Purchase days of n customers between first and last: the first customer starts on
    ``first``, the others at random; each then buys with a daily probability of 1/20."""
    rng = np.random.default_rng(seed)
    span = (last - first).days
    customers, offsets = [], []
    for i in range(n):
        start = 0 if i == 0 else int(rng.integers(0, span + 1))
        later = start + 1 + np.flatnonzero(rng.random(span - start) < 0.05)
        days = np.concatenate([[start], later])
        customers += [f"c{i:03d}"] * days.size
        offsets.append(days)
    day = np.datetime64(first, "D") + np.concatenate(offsets).astype("timedelta64[D]")
    return pd.DataFrame(
        {
            "customer_id": customers,
            "purchase_date": [d.item() for d in day],
            "value": rng.uniform(10, 90, day.size),
        }
    )
