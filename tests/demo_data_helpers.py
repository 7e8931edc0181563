"""Shared by the demo-data generator tests (tests/test_demo_data*.py): readers of the generated
files and, as fixtures (a pytest plugin, see tests/conftest.py), one CSV and one Parquet data
set per module (each takes ~1 s)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from customer_warehouse.demo import generate

REPO = Path(__file__).resolve().parents[1]
RATES = {"CNY": Decimal("1"), "USD": Decimal("7.2"), "HKD": Decimal("0.92")}
END_UTC = pd.Timestamp("2025-12-31 23:59:59", tz="UTC")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def read(folder: Path, name: str) -> pd.DataFrame:
    """A raw file as text, empty values as '' (how the raw loader sees them)."""
    csv_path, parquet_path = folder / f"{name}.csv", folder / f"{name}.parquet"
    assert csv_path.exists() != parquet_path.exists(), f"exactly one {name} file expected"
    if csv_path.exists():
        return pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    frame = pq.read_table(parquet_path).to_pandas()
    return frame.astype(object).where(frame.notna(), "")


def to_utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, format="ISO8601")


def cents(text: str) -> int:
    return int(Decimal(text) * 100)


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def clean_orders(folder: Path) -> pd.DataFrame:
    """Order rows that are not listed as dirty, with parsed time, CNY value and UTC date."""
    orders = read(folder, "orders")
    dirty = pd.read_csv(folder / "truth" / "dirty_orders.csv", dtype={"order_id": str})
    keep = ~(orders.index + 1).isin(dirty["row_number"])
    frame = orders[keep].copy()
    frame["ts"] = to_utc(frame["ordered_at"])
    frame["cny"] = [
        Decimal(a) * RATES[c] for a, c in zip(frame["amount"], frame["currency"], strict=True)
    ]
    frame["day"] = frame["ts"].dt.date
    return frame


# --------------------------------------------------------------------------------------------
# Fixtures: one CSV and one Parquet data set shared by the module (each takes ~1 s)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo_csv")
    generate(out, customers=2000, seed=7, fmt="csv", dirty_rate=0.02, quiet=True)
    return out


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo_parquet")
    generate(out, customers=800, seed=11, fmt="parquet", dirty_rate=0.01, quiet=True)
    return out
