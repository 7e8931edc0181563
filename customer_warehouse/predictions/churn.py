"""Churn risk bands from ``p_alive``: ``low`` / ``medium`` / ``high`` / ``lost``.

Reads the thresholds from the dbt seed ``churn_risk_bands`` (the one place they live): from the
warehouse table ``seeds.churn_risk_bands`` (``read_churn_thresholds``, what the assets use), or,
when no thresholds are given, from the seed file ``seeds/tiers/churn_risk_bands.csv`` itself
(``default_churn_thresholds``). Writes no table.

p_alive >= low -> ``low``; >= medium -> ``medium``; >= high -> ``high``; otherwise ``lost`` (the
seed's last band, minimum 0, is implied and not used as a threshold).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from customer_warehouse.config import PROJECT_DIR
from customer_warehouse.predictions.contract import _arr, _to_frame
from customer_warehouse.warehouse import quote_table

CHURN_BANDS: tuple[str, ...] = ("low", "medium", "high", "lost")
#: The seed (dbt loads it as ``seeds.churn_risk_bands``): columns band, min_p_alive.
CHURN_BANDS_SEED = PROJECT_DIR / "seeds" / "tiers" / "churn_risk_bands.csv"
CHURN_BANDS_TABLE = "seeds.churn_risk_bands"
_THRESHOLD_BANDS = CHURN_BANDS[:3]


def validate_churn_thresholds(thresholds: Mapping[str, float] | None) -> dict[str, float]:
    """Check the band thresholds: keys low/medium/high (``lost`` optional), 1 >= low >= medium
    >= high >= 0. Returns a plain dict of the three thresholds; None means the seed's."""
    th = dict(default_churn_thresholds() if thresholds is None else thresholds)
    th.pop("lost", None)
    if set(th) != set(_THRESHOLD_BANDS):
        raise ValueError(
            "churn thresholds need exactly the bands low, medium, high (lost optional), "
            f"got {sorted(th)}; see the seed {CHURN_BANDS_SEED.name}"
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


def _seed_thresholds(rows: pd.DataFrame) -> dict[str, float]:
    """The seed's low/medium/high rows; its last band (``lost``, minimum 0) is implied."""
    return churn_thresholds_from_rows(rows[rows["band"].isin(_THRESHOLD_BANDS)])


@functools.cache
def _seed_file_thresholds() -> tuple[tuple[str, float], ...]:
    return tuple(_seed_thresholds(pd.read_csv(CHURN_BANDS_SEED)).items())


def default_churn_thresholds() -> dict[str, float]:
    """The thresholds of the seed file (read once per process): what every function uses when
    it is given no thresholds."""
    return dict(_seed_file_thresholds())


def read_churn_thresholds(
    con: duckdb.DuckDBPyConnection, table: str = CHURN_BANDS_TABLE
) -> dict[str, float]:
    """The thresholds of the seed as dbt loaded it into the warehouse."""
    return _seed_thresholds(con.execute(f"select band, min_p_alive from {quote_table(table)}").df())


def churn_band(p_alive: Any, thresholds: Mapping[str, float] | None = None) -> np.ndarray:
    """Band per customer: p >= low -> low, >= medium -> medium, >= high -> high, else lost."""
    th = validate_churn_thresholds(thresholds)
    p = _arr(p_alive)
    return np.select(
        [p >= th["low"], p >= th["medium"], p >= th["high"]], ["low", "medium", "high"], "lost"
    ).astype(object)
