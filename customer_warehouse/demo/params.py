"""Parameters of the simulation and the shape of the files: defaults, limits, file names,
columns and the defects of dirty rows."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from customer_warehouse.config import RAW_SOURCE_NAMES
from customer_warehouse.ingestion.contract import SOURCES_BY_NAME


@dataclass(frozen=True)
class BgNbdParams:
    """BG/NBD parameters (per day). Over the default three-year window they give ~8.8 repeat
    purchases per buyer (median 3, 1 % above 75), ~20 % one-time buyers, ~33 % of buyers
    dropping out and ~10 orders per registered customer; ~3.7 % of repeat purchases fall on a
    day that already has a purchase (see ``repeat_purchase_days`` in the truth)."""

    r: float = 0.55
    alpha: float = 16.0
    a: float = 0.8
    b: float = 12.0


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma spend parameters; mean occasion value p*v/(q-1) = 60 CNY."""

    p: float = 6.0
    q: float = 3.5
    v: float = 25.0


@dataclass(frozen=True)
class Shares:
    """Fractions that shape the exports (not part of the statistical truth)."""

    prospects: float = 0.08
    split_occasions: float = 0.05
    cancelled: float = 0.03
    refunded: float = 0.03
    local_offset: float = 0.90  # timestamps written as +08:00 local time
    utc_z: float = 0.05  # written with Z; the rest without offset (UTC)
    omni_channel: float = 0.25
    foreign_currency_customers: float = 0.06  # pay half of their orders in USD or HKD
    messy_province: float = 0.02
    missing_birth_date: float = 0.05
    marketing_consent: float = 0.70
    redeemers: float = 0.35  # of repeat customers
    adjusted: float = 0.01  # of buyers: one manual point adjustment each
    over_redemptions: float = 0.03
    survey_respondents: float = 0.12  # of buyers


DEFAULT_CUSTOMERS = 5000
DEFAULT_SEED = 42
DEFAULT_START = "2023-01-01"
DEFAULT_END = "2025-12-31"
MAX_CUSTOMERS = 5_000_000  # customer ids are C + 7 digits; unknown ids need room above
DEFAULT_CHUNK_ROWS = 1 << 18  # small enough for the allocator to reuse memory between chunks

FORMATS = ("csv", "parquet")
#: The raw files the demo writes: every file of the raw-data contract.
TABLE_FILES = RAW_SOURCE_NAMES
TRUTH_FILES = (
    "params.json",
    "customers.parquet",
    "dirty_orders.csv",
    "dirty_customers.csv",
    "over_redemptions.csv",
)

LOCAL_OFFSET_SECONDS = 8 * 3600
SUFFIXES = ("+08:00", "Z", "")
PRODUCTS_PER_CATEGORY = 30

DIRTY_ORDER_REASONS = (
    "exact_duplicate",
    "conflicting_duplicate",
    "missing_customer_id",
    "missing_order_id",
    "unparseable_ordered_at",
    "missing_ordered_at",
    "unparseable_amount",
    "negative_amount",
    "absurd_amount",
    "future_ordered_at",
    "unknown_status",
    "unknown_currency",
    "unknown_customer",
)
DIRTY_CUSTOMER_REASONS = ("missing_customer_id", "exact_duplicate", "conflicting_duplicate")

ORDER_COLUMNS = SOURCES_BY_NAME["orders"].columns
CUSTOMER_COLUMNS = SOURCES_BY_NAME["customers"].columns
ITEM_COLUMNS = SOURCES_BY_NAME["order_items"].columns
PRODUCT_COLUMNS = SOURCES_BY_NAME["products"].columns
REDEMPTION_COLUMNS = ("redemption_id", "customer_id", "redeemed_at", "points")
ADJUSTMENT_COLUMNS = SOURCES_BY_NAME["point_adjustments"].columns
SURVEY_COLUMNS = (
    "response_id",
    "customer_id",
    "submitted_at",
    "nps",
    "satisfaction",
    "comment",
    "need_tags",
)

EPOCH = dt.date(1970, 1, 1)
ORDER_ID_BASE = 100_000_000
