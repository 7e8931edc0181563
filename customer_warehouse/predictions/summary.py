"""The transaction summary: purchase days -> the model input (frequency, recency, T,
monetary_value), for the backtest and for callers without ``marts.customer_features``.

Reads transactions (customer_id, purchase_date, value; a DataFrame or a DuckDB relation, or the
warehouse table ``intermediate.int_orders_aggregated_to_customer_days`` with
``read_purchase_days``); writes no table.

Why not pymc-marketing's ``rfm_summary`` (``clv.utils``): on the same purchase days it gives the
same frequency, recency and T, but its monetary_value is the pandas mean of the repeat days'
spend where this one is (total spend - first day's spend) / frequency, like the dbt mart's
repeat_revenue / frequency. The two differ by up to 1e-13 (floating sums in another order), and
the Gamma-Gamma fit turns that into differences of up to 2e-8 in ``clv_12m`` (demo data, 4,606
customers): switching would change the backtest's numbers. This summary also works on
integer day numbers that the backtest reuses to count holdout purchases, and is about 20 %
faster (900k purchase days: 2.8 s against 3.4 s).
``tests/test_predictions.py`` checks that both agree (to 1e-9).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from customer_warehouse.predictions.contract import _as_date, _to_frame
from customer_warehouse.warehouse import quote_table

#: One row per customer and purchase day, with the day's revenue (a dbt model).
PURCHASE_DAYS_TABLE = "intermediate.int_orders_aggregated_to_customer_days"


def read_purchase_days(
    con: duckdb.DuckDBPyConnection, table: str = PURCHASE_DAYS_TABLE
) -> pd.DataFrame:
    """The transactions of the backtest (customer_id, purchase_date, value) from the warehouse."""
    return con.execute(
        f"select customer_id, purchase_date, revenue as value from {quote_table(table)}"
    ).df()


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
    """The summary of the purchase days up to day number ``as_of``: one row per customer, sorted
    by customer_id, columns ``FEATURE_COLUMNS``."""
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
