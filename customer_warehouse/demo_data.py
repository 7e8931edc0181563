"""Deterministic demo exports with a known ground truth.

Why this exists: the warehouse's rules (quarantine, purchase occasions, loyalty balances,
buy-till-you-die predictions) can only be checked against data whose right answers are known.
This module writes raw exports in the shape of ``docs/raw-data.md`` from a simulation whose
parameters and per-customer latent values are written next to them (``truth/``).

Run it as ``python -m customer_warehouse.demo_data --out DIR [--customers N] [--seed 42]
[--format csv|parquet] [--dirty-rate 0.0] [--start 2023-01-01] [--end 2025-12-31] [--no-items]
[--quiet]`` or call :func:`generate`. The same arguments give byte-identical files; the files it
writes (and their other-format twins, so a folder never holds both ``orders.csv`` and
``orders.parquet``) are replaced, anything else in the folder is left alone.

The purchase process (the ground truth)
---------------------------------------
* Buy-till-you-die, BG/NBD (Fader, Hardie & Lee 2005), time unit one day. Buyer *i* makes a first
  purchase at ``t0_i`` (acquisition is seasonal: Singles' Day / December, the weeks before the
  Spring Festival, 618), has a purchase rate ``lambda_i ~ Gamma(r, rate alpha)`` and a dropout
  probability ``p_i ~ Beta(a, b)``; after each *repeat* purchase the customer dies with
  probability ``p_i`` (with no repeat purchase a customer is alive for sure).
* Exact, vectorized simulation with ``T_i = end - t0_i``: ``N_i ~ Poisson(lambda_i T_i)`` arrivals
  if never dying, ``J_i ~ Geometric(p_i)`` on {1, 2, ...}, ``x_i = min(N_i, J_i)`` repeat
  purchases (dead when ``J_i <= N_i``). The first ``x_i`` of the ``N_i`` uniform order statistics
  on ``[0, T_i]`` are ``T_i * S_k / (S_{x_i} + G_i)`` with ``S_k`` sums of Exp(1) gaps and
  ``G_i ~ Gamma(N_i + 1 - x_i)``, so the cost is proportional to the number of orders.
* Each purchase occasion is worth ``z ~ Gamma(p, rate nu_i)`` CNY with
  ``nu_i ~ Gamma(q, rate v)`` (Gamma-Gamma, Fader & Hardie 2005), ``E[z] = p v / (q - 1)``.
* A purchase occasion is a calendar day: the fractional part of the simulated time is replaced
  by a time of day between 08:00 and 23:59:59 China time (00:00-15:59:59 UTC), so the UTC date
  and the China date of every order agree and "one UTC day = one occasion" (docs/raw-data.md)
  means the same whatever time zone is assumed. Two arrivals of a very frequent buyer can fall on
  the same day; they are then one occasion. ``truth/customers.parquet`` therefore has both the
  latent count (``repeat_purchases``) and the count the warehouse must find
  (``repeat_purchase_days`` = distinct completed-order days after the first one, exact).
* About 5 % of occasions are split into two completed orders on the same day (amount split),
  to exercise the occasion rule. Cancelled (~3 %) and refunded (~3 %) orders are *extra* orders
  of buyers, on a day between their first and last purchase day, outside the BG/NBD process.
* About 8 % of registered customers never buy (prospects). Every customer signs up before any
  of their orders. Customer ids are numbered in sign-up order, order ids in time order (with
  gaps, as real systems skip ids).

Values are written the way an export has them: every column of the raw files is text (Parquet
too), timestamps ISO 8601 with ``+08:00`` (~90 %), ``Z`` or no offset (UTC), amounts with two
decimals in the order's currency (CNY; some USD at 7.2 and HKD at 0.92, converted so the CNY
value is the Gamma-Gamma value up to rounding). ``amount`` is what the customer paid;
``discount_amount`` is the discount given on top of it.

Dirty rows (``dirty_rate``)
---------------------------
``dirty_rate * orders`` extra order rows, spread evenly over the reasons in
:data:`DIRTY_ORDER_REASONS`, each row with exactly one defect, and ``dirty_rate * customers``
extra customer rows (:data:`DIRTY_CUSTOMER_REASONS`). ``truth/dirty_orders.csv`` and
``truth/dirty_customers.csv`` list every raw row that staging must reject (or, for
``unknown_customer``, keep with a flag), with its 1-based data row number in the file (header not
counted; it is the loader's ``_source_row``); rows whose id is empty are identified by that row
number. An exact duplicate lists only the copy; a conflicting duplicate lists the original and
the copy, because both are rejected. Conflicting duplicates are made from cancelled/refunded
orders (and from prospects for customers), so rejecting the original does not remove a purchase:
the truth of the clean rows stays exact (only if a run has no such order is a completed order
used, which then removes one real purchase from what the warehouse can see).

Other files
-----------
``order_items`` (1-4 lines per order summing to the amount to the cent; category affinity per
customer, outerwear in winter for provinces with cold winters), ``products`` (300),
``redemptions`` (points spent by a subset of repeat customers, never more than a fraction of the
unexpired points earned since their previous redemption and at least 15 days old, past the
return window, so they are valid under the loyalty rules in ``seeds/loyalty_rules.csv``; ~3 %
are deliberately larger than any possible balance and listed in
``truth/over_redemptions.csv``), ``point_adjustments`` (one manual adjustment for ~1 % of buyers,
with a reason code of ``seeds/point_adjustment_reasons.csv``), ``surveys/responses_YYYY_qN.csv|
json`` (NPS and satisfaction correlated with spend and whether the customer is still active).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from customer_warehouse.ingestion.contract import SOURCES_BY_NAME

# --------------------------------------------------------------------------------------------
# Parameters and constants
# --------------------------------------------------------------------------------------------


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
TABLE_FILES = (
    "orders",
    "customers",
    "order_items",
    "products",
    "redemptions",
    "point_adjustments",
)
TRUTH_FILES = (
    "params.json",
    "customers.parquet",
    "dirty_orders.csv",
    "dirty_customers.csv",
    "over_redemptions.csv",
)

LOCAL_OFFSET_SECONDS = 8 * 3600
SUFFIXES = ("+08:00", "Z", "")
CURRENCIES = ("CNY", "USD", "HKD")
RATE_X100 = np.array([100, 720, 92], dtype=np.int64)  # CNY per unit, times 100
CHANNELS = ("online_shop", "app", "store", "phone")
CHANNEL_WEIGHTS = (0.36, 0.34, 0.22, 0.08)
STATUSES = ("completed", "cancelled", "refunded")
ACQUISITION_CHANNELS = ("organic", "search", "social", "referral", "store")
ACQUISITION_WEIGHTS = (0.30, 0.25, 0.20, 0.10, 0.15)
CATEGORIES = (
    "apparel",
    "outerwear",
    "footwear",
    "beauty",
    "home",
    "electronics",
    "food",
    "sports",
    "kids",
    "books",
)
CATEGORY_WEIGHTS = (0.20, 0.08, 0.10, 0.14, 0.10, 0.08, 0.12, 0.07, 0.06, 0.05)
OUTERWEAR = CATEGORIES.index("outerwear")
PRODUCTS_PER_CATEGORY = 30
NEED_TAGS = ("quality", "price", "service", "customization", "delivery")

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

# Mainland provinces / municipalities / autonomous regions: English name, population (millions,
# 2020 census, rounded), cold winters (north of the Qinling-Huaihe line or high plateau), and
# 1-3 major cities with their share of the province's customers.
PROVINCES: tuple[tuple[str, float, bool, tuple[tuple[str, float], ...]], ...] = (
    ("Guangdong", 126.0, False, (("Guangzhou", 0.4), ("Shenzhen", 0.4), ("Dongguan", 0.2))),
    ("Shandong", 101.5, True, (("Jinan", 0.4), ("Qingdao", 0.4), ("Yantai", 0.2))),
    ("Henan", 99.4, True, (("Zhengzhou", 0.6), ("Luoyang", 0.25), ("Nanyang", 0.15))),
    ("Jiangsu", 84.7, False, (("Nanjing", 0.4), ("Suzhou", 0.4), ("Wuxi", 0.2))),
    ("Sichuan", 83.7, False, (("Chengdu", 0.7), ("Mianyang", 0.15), ("Yibin", 0.15))),
    ("Hebei", 74.6, True, (("Shijiazhuang", 0.45), ("Tangshan", 0.3), ("Baoding", 0.25))),
    ("Hunan", 66.4, False, (("Changsha", 0.6), ("Zhuzhou", 0.2), ("Hengyang", 0.2))),
    ("Zhejiang", 64.6, False, (("Hangzhou", 0.5), ("Ningbo", 0.3), ("Wenzhou", 0.2))),
    ("Anhui", 61.0, False, (("Hefei", 0.6), ("Wuhu", 0.2), ("Bengbu", 0.2))),
    ("Hubei", 57.8, False, (("Wuhan", 0.7), ("Yichang", 0.15), ("Xiangyang", 0.15))),
    ("Guangxi", 50.1, False, (("Nanning", 0.5), ("Liuzhou", 0.25), ("Guilin", 0.25))),
    ("Yunnan", 47.2, False, (("Kunming", 0.7), ("Qujing", 0.15), ("Dali", 0.15))),
    ("Jiangxi", 45.2, False, (("Nanchang", 0.6), ("Ganzhou", 0.25), ("Jiujiang", 0.15))),
    ("Liaoning", 42.6, True, (("Shenyang", 0.45), ("Dalian", 0.4), ("Anshan", 0.15))),
    ("Fujian", 41.5, False, (("Fuzhou", 0.4), ("Xiamen", 0.35), ("Quanzhou", 0.25))),
    ("Shaanxi", 39.5, True, (("Xi'an", 0.75), ("Baoji", 0.125), ("Xianyang", 0.125))),
    ("Guizhou", 38.6, False, (("Guiyang", 0.65), ("Zunyi", 0.35))),
    ("Shanxi", 34.9, True, (("Taiyuan", 0.6), ("Datong", 0.2), ("Changzhi", 0.2))),
    ("Chongqing", 32.1, False, (("Chongqing", 1.0),)),
    ("Heilongjiang", 31.9, True, (("Harbin", 0.6), ("Daqing", 0.2), ("Qiqihar", 0.2))),
    ("Xinjiang", 25.9, True, (("Urumqi", 0.7), ("Kashgar", 0.3))),
    ("Gansu", 25.0, True, (("Lanzhou", 0.75), ("Tianshui", 0.25))),
    ("Shanghai", 24.9, False, (("Shanghai", 1.0),)),
    ("Jilin", 24.1, True, (("Changchun", 0.65), ("Jilin", 0.35))),
    ("Inner Mongolia", 24.0, True, (("Hohhot", 0.45), ("Baotou", 0.35), ("Ordos", 0.2))),
    ("Beijing", 21.9, True, (("Beijing", 1.0),)),
    ("Tianjin", 13.9, True, (("Tianjin", 1.0),)),
    ("Hainan", 10.1, False, (("Haikou", 0.65), ("Sanya", 0.35))),
    ("Ningxia", 7.2, True, (("Yinchuan", 1.0),)),
    ("Qinghai", 5.9, True, (("Xining", 1.0),)),
    ("Tibet", 3.6, True, (("Lhasa", 1.0),)),
)

# Spring Festival (Chinese New Year) dates; other years fall back to February 5.
SPRING_FESTIVAL: dict[int, tuple[int, int]] = {
    2018: (2, 16),
    2019: (2, 5),
    2020: (1, 25),
    2021: (2, 12),
    2022: (2, 1),
    2023: (1, 22),
    2024: (2, 10),
    2025: (1, 29),
    2026: (2, 17),
    2027: (2, 6),
    2028: (1, 26),
    2029: (2, 13),
    2030: (2, 3),
}

SURNAMES = (
    ("Wang", 7.1),
    ("Li", 7.0),
    ("Zhang", 6.5),
    ("Liu", 5.4),
    ("Chen", 4.5),
    ("Yang", 3.1),
    ("Huang", 2.2),
    ("Zhao", 2.2),
    ("Wu", 2.0),
    ("Zhou", 1.9),
    ("Xu", 1.5),
    ("Sun", 1.4),
    ("Ma", 1.3),
    ("Zhu", 1.3),
    ("Hu", 1.2),
    ("Guo", 1.1),
    ("He", 1.1),
    ("Lin", 1.0),
    ("Gao", 1.0),
    ("Luo", 0.9),
    ("Zheng", 0.9),
    ("Liang", 0.8),
    ("Xie", 0.7),
    ("Song", 0.6),
    ("Tang", 0.6),
    ("Han", 0.5),
    ("Feng", 0.5),
    ("Deng", 0.5),
    ("Cao", 0.5),
    ("Peng", 0.5),
)
GIVEN_NAMES_F = (
    "Fang", "Na", "Min", "Jing", "Li", "Yan", "Juan", "Xiu", "Ying", "Hui", "Lei", "Mei", "Xue",
    "Ting", "Yun", "Lan", "Qian", "Jie", "Xin", "Yu", "Hong", "Rui", "Yue", "Shan", "Wen",
)  # fmt: skip
GIVEN_NAMES_M = (
    "Wei", "Qiang", "Lei", "Jun", "Yong", "Jie", "Tao", "Ming", "Chao", "Hao", "Peng", "Bo",
    "Gang", "Hui", "Bin", "Long", "Kai", "Feng", "Yang", "Jian", "Dong", "Xin", "Ning", "Lin",
    "Zhen",
)  # fmt: skip

PRODUCT_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "apparel": (
        ("Cotton", "Linen", "Silk"),
        ("T-Shirt", "Shirt", "Blouse", "Dress", "Skirt", "Chinos", "Jeans", "Polo", "Cardigan",
         "Sweater"),
    ),
    "outerwear": (
        ("Classic", "Urban", "Alpine"),
        ("Down Jacket", "Parka", "Wool Coat", "Trench Coat", "Puffer Vest", "Fleece Jacket",
         "Windbreaker", "Rain Jacket", "Padded Coat", "Overcoat"),
    ),
    "footwear": (
        ("Everyday", "Trail", "City"),
        ("Sneakers", "Loafers", "Boots", "Sandals", "Slippers", "Running Shoes", "Oxfords",
         "Ankle Boots", "Canvas Shoes", "Snow Boots"),
    ),
    "beauty": (
        ("Hydrating", "Gentle", "Radiance"),
        ("Face Cream", "Serum", "Cleanser", "Toner", "Sunscreen", "Lip Balm", "Face Mask",
         "Eye Cream", "Hand Cream", "Body Lotion"),
    ),
    "home": (
        ("Nordic", "Bamboo", "Ceramic"),
        ("Mug Set", "Bowl Set", "Cushion", "Bedsheet", "Towel Set", "Vase", "Lamp", "Storage Box",
         "Teapot", "Rug"),
    ),
    "electronics": (
        ("Compact", "Pro", "Smart"),
        ("Earbuds", "Power Bank", "Charger", "Speaker", "Smartwatch", "Keyboard", "Mouse",
         "Webcam", "Desk Fan", "E-Reader"),
    ),
    "food": (
        ("Organic", "Premium", "Family"),
        ("Green Tea", "Oolong Tea", "Rice", "Dried Fruit", "Nut Mix", "Mooncakes", "Coffee Beans",
         "Honey", "Noodles", "Snack Box"),
    ),
    "sports": (
        ("Active", "Training", "Outdoor"),
        ("Yoga Mat", "Dumbbells", "Jump Rope", "Water Bottle", "Backpack", "Tennis Racket",
         "Badminton Set", "Cycling Gloves", "Sports Socks", "Resistance Band"),
    ),
    "kids": (
        ("Little", "Happy", "Bright"),
        ("Building Blocks", "Picture Book", "Plush Toy", "Puzzle", "Kids Jacket", "School Bag",
         "Crayons", "Toy Car", "Kids Sneakers", "Pajamas"),
    ),
    "books": (
        ("Illustrated", "Collected", "Essential"),
        ("Cookbook", "Novel", "Poetry", "History", "Travel Guide", "Biography", "Science Primer",
         "Art Album", "Language Course", "Business Guide"),
    ),
}  # fmt: skip

COMMENTS = {
    "promoter": (
        "Great quality, will buy again.",
        "Fast delivery and friendly service.",
        "Love the new collection!",
        "Always reliable, I recommend it to friends.",
        "The member perks are worth it.",
        "Exactly as described, very happy.",
    ),
    "passive": (
        "Good overall, prices could be lower.",
        "Delivery took a bit long.",
        "Nice products but limited sizes.",
        "Fine, nothing special.",
        "Would like more custom options.",
        "OK quality for the price.",
    ),
    "detractor": (
        "Item arrived damaged.",
        "Customer service did not reply.",
        "Too expensive for the quality.",
        "Wrong size delivered, refund was slow.",
        "Quality has dropped, disappointed.",
        "Delivery was late twice.",
    ),
}

# The files follow the raw-data contract (ingestion/contract.py) column for column.
ORDER_COLUMNS = SOURCES_BY_NAME["orders"].columns
CUSTOMER_COLUMNS = SOURCES_BY_NAME["customers"].columns
ITEM_COLUMNS = SOURCES_BY_NAME["order_items"].columns
PRODUCT_COLUMNS = SOURCES_BY_NAME["products"].columns
REDEMPTION_COLUMNS = ("redemption_id", "customer_id", "redeemed_at", "points")
ADJUSTMENT_COLUMNS = ("adjustment_id", "customer_id", "points", "reason", "adjusted_at")
#: Reason codes of the demo's manual adjustments (all in seeds/point_adjustment_reasons.csv)
#: and the share of each; corrections take points, the others give them.
ADJUSTMENT_REASONS = ("goodwill", "service_recovery", "promotion", "correction")
ADJUSTMENT_REASON_WEIGHTS = (0.4, 0.3, 0.1, 0.2)
SURVEY_COLUMNS = (
    "response_id",
    "customer_id",
    "submitted_at",
    "nps",
    "satisfaction",
    "comment",
    "need_tags",
)

_EPOCH = dt.date(1970, 1, 1)
_ORDER_ID_BASE = 100_000_000


# --------------------------------------------------------------------------------------------
# The BG/NBD core (public so tests can check it on large samples without writing files)
# --------------------------------------------------------------------------------------------


@dataclass
class BgNbdDraw:
    """One exact BG/NBD draw for a set of customers (arrays aligned with the inputs)."""

    arrivals: np.ndarray  # N_i: arrivals in (0, T_i] had the customer never died
    repeat_purchases: np.ndarray  # x_i = min(N_i, J_i)
    dropped_out: np.ndarray  # J_i <= N_i: died right after repeat purchase x_i
    repeat_times: np.ndarray  # concatenated per customer, sorted, time since first purchase


def simulate_bg_nbd(
    rng: np.random.Generator, lam: np.ndarray, p: np.ndarray, T: np.ndarray
) -> BgNbdDraw:
    """Repeat purchases of customers with rates ``lam``, dropout probabilities ``p`` and
    observation lengths ``T`` (time since their first purchase), exactly and without loops.

    Arrival times of a Poisson process on [0, T] given N arrivals are uniform order
    statistics, ``T * S_k / S_{N+1}`` with ``S`` sums of Exp(1) gaps; only the first
    ``x = min(N, J)`` are needed and ``S_{N+1} - S_x ~ Gamma(N + 1 - x)``, so the work is
    proportional to the number of purchases, not of arrivals.
    """
    lam = np.asarray(lam, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    arrivals = rng.poisson(lam * T)
    death = rng.geometric(np.clip(p, 1e-12, 1.0))
    x = np.minimum(arrivals, death)
    dropped = death <= arrivals
    total = int(x.sum())
    gaps = rng.standard_exponential(total)
    rest = rng.gamma(arrivals - x + 1.0)
    if total == 0:
        return BgNbdDraw(arrivals, x, dropped, np.empty(0))
    owner = np.repeat(np.arange(len(x)), x)
    cums = np.cumsum(gaps)
    ends = np.cumsum(x)
    before = np.concatenate(([0.0], cums))[ends - x]  # cumulative sum before each segment
    partial = cums - before[owner]
    seg_total = np.concatenate(([0.0], cums))[ends] - before  # S_x (0 when x = 0)
    times = T[owner] * partial / (seg_total[owner] + rest[owner])
    return BgNbdDraw(arrivals, x, dropped, times)


# --------------------------------------------------------------------------------------------
# Small vectorized helpers
# --------------------------------------------------------------------------------------------


class _Progress:
    """Stage lines on stderr with elapsed seconds, silenced by ``quiet``."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.started = time.perf_counter()

    def __call__(self, message: str, done: int | None = None, total: int | None = None) -> None:
        if self.quiet:
            return
        if total is not None:
            message = f"{message}: {done or 0:,}/{total:,}"
        elapsed = time.perf_counter() - self.started
        print(f"[{elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


def _strings_from_matrix(buf: np.ndarray) -> pa.Array:
    """Fixed-width ASCII rows of a uint8 matrix → a string array, without a Python loop."""
    n, width = buf.shape
    data = pa.py_buffer(np.ascontiguousarray(buf))
    if (n + 1) * width < 2**31:
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), data)
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), data)


def _digits(numbers: np.ndarray, width: int, prefix: str = "") -> pa.Array:
    """``prefix`` + zero-padded ``width``-digit numbers (ids, phone numbers)."""
    numbers = np.asarray(numbers, dtype=np.int64)
    head = prefix.encode("ascii")
    buf = np.empty((len(numbers), len(head) + width), dtype=np.uint8)
    if head:
        buf[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    value = numbers.copy()
    for position in range(len(head) + width - 1, len(head) - 1, -1):
        buf[:, position] = value % 10 + 48
        value //= 10
    return _strings_from_matrix(buf)


_CACHE: dict[str, pa.Array] = {}
_MATRICES: dict[str, np.ndarray] = {}


def _time_of_day_matrix() -> np.ndarray:
    """'HH:MM:SS' for every second of a day, as an 86,400 x 8 byte matrix."""
    if "tod" not in _MATRICES:
        seconds = np.arange(86400)
        buf = np.full((86400, 8), ord(":"), dtype=np.uint8)
        for start, value in ((0, seconds // 3600), (3, seconds // 60 % 60), (6, seconds % 60)):
            buf[:, start] = value // 10 + 48
            buf[:, start + 1] = value % 10 + 48
        _MATRICES["tod"] = buf
    return _MATRICES["tod"]


def _date_matrix(low: int, high: int) -> np.ndarray:
    """'YYYY-MM-DD' of the days ``low..high`` (days since 1970-01-01) as a byte matrix."""
    text = "".join((_EPOCH + dt.timedelta(days=day)).isoformat() for day in range(low, high + 1))
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8).reshape(-1, 10)


def _whole_number_table() -> pa.Array:
    """'0'..'99999' as strings (amounts above fall back to a cast)."""
    if "whole" not in _CACHE:
        _CACHE["whole"] = pc.cast(pa.array(np.arange(100_000)), pa.string())
        _CACHE["cents"] = pa.array([f"{i:02d}" for i in range(100)])
    return _CACHE["whole"]


def _take(table: pa.Array | Sequence[str], index: np.ndarray) -> pa.Array:
    if not isinstance(table, pa.Array):
        table = pa.array(list(table), pa.string())
    return table.take(pa.array(np.asarray(index, dtype=np.int64)))


def _format_money(cents: np.ndarray) -> pa.Array:
    """Non-negative cents → '123.45'."""
    cents = np.asarray(cents, dtype=np.int64)
    table = _whole_number_table()
    whole = cents // 100
    big = whole >= len(table)
    text = _take(table, np.where(big, 0, whole))
    if big.any():
        text = pc.replace_with_mask(text, pa.array(big), pc.cast(pa.array(whole[big]), pa.string()))
    return pc.binary_join_element_wise(text, _take(_CACHE["cents"], cents % 100), ".")


def _format_dates(epoch_days: np.ndarray) -> pa.Array:
    """Days since 1970-01-01 → 'YYYY-MM-DD' via a lookup table of the days in range."""
    epoch_days = np.asarray(epoch_days, dtype=np.int64)
    if len(epoch_days) == 0:
        return pa.array([], pa.string())
    low, high = int(epoch_days.min()), int(epoch_days.max())
    table = pa.array(
        [(_EPOCH + dt.timedelta(days=day)).isoformat() for day in range(low, high + 1)]
    )
    return _take(table, epoch_days - low)


_SUFFIX_BYTES = np.zeros((3, 6), dtype=np.uint8)
for _row, _suffix in enumerate(SUFFIXES):
    _SUFFIX_BYTES[_row, : len(_suffix)] = np.frombuffer(_suffix.encode("ascii"), dtype=np.uint8)
_SUFFIX_LENGTHS = np.array([len(suffix) for suffix in SUFFIXES], dtype=np.int64)


def _format_timestamps(
    utc_seconds: np.ndarray, style: np.ndarray, valid: np.ndarray | None = None
) -> pa.Array:
    """UTC epoch seconds → ISO 8601; style 0 = local time with +08:00, 1 = UTC with Z,
    2 = UTC without offset; null where ``valid`` is false. Built as bytes with numpy, ~10x
    faster than ``pc.strftime``."""
    utc_seconds = np.asarray(utc_seconds, dtype=np.int64)
    style = np.asarray(style, dtype=np.int64)
    n = len(utc_seconds)
    if valid is not None:
        utc_seconds, style = utc_seconds[valid], style[valid]
    m = len(utc_seconds)
    buf = np.empty((m, 25), dtype=np.uint8)
    if m:
        shown = utc_seconds + np.where(style == 0, LOCAL_OFFSET_SECONDS, 0)
        day = shown // 86400
        low = int(day.min())
        buf[:, :10] = _date_matrix(low, int(day.max()))[day - low]
        buf[:, 10] = ord("T")
        buf[:, 11:19] = _time_of_day_matrix()[shown - day * 86400]
        buf[:, 19:] = _SUFFIX_BYTES[style]
    lengths = 19 + _SUFFIX_LENGTHS[style]
    mask = np.arange(25, dtype=np.int16)[None, :] < lengths[:, None]
    data = pa.py_buffer(np.ascontiguousarray(buf[mask]))
    bitmap = None
    if valid is not None:
        full = np.zeros(n, dtype=np.int64)
        full[valid] = lengths
        lengths = full
        bitmap = pa.py_buffer(np.packbits(valid.astype(np.uint8), bitorder="little"))
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), data, bitmap)


def _null_where(values: pa.Array, mask: np.ndarray) -> pa.Array:
    if not mask.any():
        return values
    return pc.if_else(pa.array(mask), pa.scalar(None, values.type), values)


def _hash64(keys: np.ndarray, stream: int, seed: int) -> np.ndarray:
    """Counter-based random bits (splitmix64 of key, stream and seed): the same key always gets
    the same bits, so chunked work does not depend on where the chunks start."""
    mix = np.uint64((seed * 0x9E3779B97F4A7C15 + stream * 0xD1B54A32D192ED03) % (1 << 64))
    with np.errstate(over="ignore"):
        z = np.asarray(keys, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + mix
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def _unit(bits: np.ndarray, field: int) -> np.ndarray:
    """The 16-bit field ``field`` (0-3) of 64 random bits as a uniform number in [0, 1)."""
    return ((bits >> np.uint64(16 * field)) & np.uint64(0xFFFF)).astype(np.float64) / 65536.0


def _weighted(rng: np.random.Generator, weights: Sequence[float], size: int) -> np.ndarray:
    """Category indices drawn with the given relative weights. Few categories: a 65,536-slot
    lookup table (weights resolved to 1/65,536, much faster than a search per draw)."""
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64))
    cumulative /= cumulative[-1]
    if len(cumulative) <= 64:
        slots = (np.arange(1 << 16) + 0.5) / (1 << 16)
        table = np.minimum(np.searchsorted(cumulative, slots, side="right"), len(cumulative) - 1)
        return table.astype(np.int64)[rng.integers(0, 1 << 16, size)]
    return np.minimum(np.searchsorted(cumulative, rng.random(size), side="right"), len(weights) - 1)


def _segment_starts(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) - counts


def _time_of_day(rng: np.random.Generator, size: int) -> np.ndarray:
    """Seconds after UTC midnight of a purchase between 08:00 and 23:59:59 China time, with a
    lunch and an evening peak."""
    local_hour_weights = (2, 3, 4, 5, 6, 5, 4, 4, 4, 5, 6, 8, 9, 8, 6, 3)  # 08:00 .. 23:00
    hour = _weighted(rng, local_hour_weights, size)
    return hour * 3600 + rng.integers(0, 3600, size)


def _acquisition_day_weights(start: dt.date, n_days: int) -> np.ndarray:
    """Relative weight of each day for first purchases and sign-ups: a slow growth trend,
    weekends, Singles' Day (11.11) and December (12.12, year end), the three weeks before the
    Spring Festival (New Year shopping), and 618 in June."""
    days = np.datetime64(start.isoformat()) + np.arange(n_days)
    month_start = days.astype("datetime64[M]")
    month = month_start.astype(np.int64) % 12 + 1
    day_of_month = (days - month_start.astype("datetime64[D]")).astype(np.int64) + 1
    weekday = (days.astype(np.int64) + 3) % 7  # 0 = Monday
    weights = 1.0 + 0.3 * np.arange(n_days) / max(n_days, 1)
    weights = weights * (1.0 + 0.15 * (weekday >= 5))
    weights = weights * np.where(month == 11, 1.6, np.where(month == 12, 1.4, 1.0))
    weights += 3.0 * ((month == 11) & (day_of_month >= 9) & (day_of_month <= 11))
    weights += 1.5 * ((month == 12) & (day_of_month == 12))
    weights += 1.0 * ((month == 6) & (day_of_month >= 16) & (day_of_month <= 18))
    years = range(start.year, (start + dt.timedelta(days=n_days)).year + 1)
    for year in years:
        month_day = SPRING_FESTIVAL.get(year, (2, 5))
        festival = np.datetime64(dt.date(year, *month_day).isoformat())
        weights += 0.8 * ((days >= festival - 21) & (days < festival))
        weights *= np.where((days >= festival) & (days < festival + 7), 0.6, 1.0)
    return weights


def _sample_days(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    """Continuous day positions (day index + fraction) drawn with the given day weights."""
    day = _weighted(rng, weights, size)
    return day + rng.random(size)


# --------------------------------------------------------------------------------------------
# The simulation
# --------------------------------------------------------------------------------------------


@dataclass
class _Customers:
    n: int
    is_buyer: np.ndarray
    province: np.ndarray
    city: np.ndarray  # index into the flat city table
    cold: np.ndarray
    gender: np.ndarray  # 0 F, 1 M, 2 empty
    acquisition: np.ndarray
    preferred_channel: np.ndarray
    omni: np.ndarray
    favorite_category: np.ndarray
    discount_propensity: np.ndarray
    foreign_currency: np.ndarray  # 0 = none, else index into CURRENCIES
    signup: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    number: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


@dataclass
class _Buyers:
    index: np.ndarray  # customer index of each buyer
    t0: np.ndarray
    T: np.ndarray
    lam: np.ndarray
    p: np.ndarray
    nu: np.ndarray
    draw: BgNbdDraw
    first_day: np.ndarray
    last_day: np.ndarray
    repeat_days: np.ndarray


@dataclass
class _Orders:
    """Every real order, sorted by time (the row order of the export)."""

    id: np.ndarray
    customer: np.ndarray  # customer index
    utc: np.ndarray
    style: np.ndarray
    cents: np.ndarray  # in the order's currency
    currency: np.ndarray
    channel: np.ndarray
    status: np.ndarray
    changed_utc: np.ndarray
    discount_cents: np.ndarray
    customer_number: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


@dataclass
class _Completed:
    """Completed orders in customer-major order (by buyer, then day): loyalty points."""

    buyer: np.ndarray
    day: np.ndarray
    points: np.ndarray


def _city_table() -> tuple[list[str], np.ndarray, np.ndarray]:
    names: list[str] = []
    province_of: list[int] = []
    share: list[float] = []
    for index, (_name, _population, _cold, cities) in enumerate(PROVINCES):
        for city, city_share in cities:
            names.append(city)
            province_of.append(index)
            share.append(city_share)
    return names, np.array(province_of), np.array(share)


def _simulate_customers(rng: np.random.Generator, n: int, shares: Shares) -> _Customers:
    population = np.array([row[1] for row in PROVINCES])
    province = _weighted(rng, population, n)
    _names, province_of, city_share = _city_table()
    city_start = np.searchsorted(province_of, np.arange(len(PROVINCES)))
    city_count = np.bincount(province_of, minlength=len(PROVINCES))
    # Within a province: pick a city by its share (at most three cities, so a cumulative test).
    u = rng.random(n)
    offset = np.zeros(n, dtype=np.int64)
    cumulative = np.zeros(n)
    for k in range(int(city_count.max()) - 1):
        has_next = city_count[province] > k + 1
        cumulative = cumulative + np.where(
            has_next, city_share[np.minimum(city_start[province] + k, len(city_share) - 1)], 1.0
        )
        offset += (u >= cumulative) & has_next
    city = city_start[province] + offset
    cold = np.array([row[2] for row in PROVINCES])[province]
    acquisition = _weighted(rng, ACQUISITION_WEIGHTS, n)
    preferred = _weighted(rng, CHANNEL_WEIGHTS, n)
    store_acquired = acquisition == ACQUISITION_CHANNELS.index("store")
    preferred = np.where(store_acquired & (rng.random(n) < 0.6), CHANNELS.index("store"), preferred)
    foreign = np.where(
        rng.random(n) < shares.foreign_currency_customers,
        np.where(rng.random(n) < 0.4, 1, 2),
        0,
    )
    return _Customers(
        n=n,
        is_buyer=rng.random(n) >= shares.prospects,
        province=province,
        city=city,
        cold=cold,
        gender=_weighted(rng, (0.52, 0.45, 0.03), n),
        acquisition=acquisition,
        preferred_channel=preferred,
        omni=rng.random(n) < shares.omni_channel,
        favorite_category=_weighted(rng, CATEGORY_WEIGHTS, n),
        discount_propensity=rng.beta(0.7, 5.0, n),
        foreign_currency=foreign,
    )


def _simulate_buyers(
    rng: np.random.Generator,
    customers: _Customers,
    day_weights: np.ndarray,
    bg: BgNbdParams,
    gg: GammaGammaParams,
) -> _Buyers:
    index = np.flatnonzero(customers.is_buyer)
    nb = len(index)
    n_days = len(day_weights)
    t0 = _sample_days(rng, day_weights, nb)
    T = n_days - t0
    lam = rng.gamma(bg.r, 1.0 / bg.alpha, nb)
    p = rng.beta(bg.a, bg.b, nb)
    nu = rng.gamma(gg.q, 1.0 / gg.v, nb)
    draw = simulate_bg_nbd(rng, lam, p, T)
    return _Buyers(index, t0, T, lam, p, nu, draw, *_purchase_days(t0, draw))


def _occasion_times(t0: np.ndarray, draw: BgNbdDraw) -> tuple[np.ndarray, np.ndarray]:
    """Buyer index and continuous time of every purchase occasion, customer-major."""
    counts = draw.repeat_purchases + 1
    owner = np.repeat(np.arange(len(t0)), counts)
    times = t0[owner]
    is_repeat = np.ones(len(owner), dtype=bool)
    is_repeat[_segment_starts(counts)] = False
    times[is_repeat] += draw.repeat_times
    return owner, times


def _purchase_days(t0: np.ndarray, draw: BgNbdDraw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First and last purchase day and the number of distinct repeat purchase days."""
    if len(t0) == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty
    counts = draw.repeat_purchases + 1
    _owner, times = _occasion_times(t0, draw)
    day = np.floor(times).astype(np.int64)
    starts = _segment_starts(counts)
    new_day = np.ones(len(day), dtype=np.int64)
    new_day[1:] = day[1:] != day[:-1]
    new_day[starts] = 1
    return day[starts], day[starts + counts - 1], np.add.reduceat(new_day, starts) - 1


def _build_orders(
    rng: np.random.Generator,
    customers: _Customers,
    buyers: _Buyers,
    gg: GammaGammaParams,
    shares: Shares,
    start_epoch_day: int,
    cap_utc: int,
) -> tuple[_Orders, _Completed, dict[str, int]]:
    owner, times = _occasion_times(buyers.t0, buyers.draw)
    n_occasions = len(owner)
    day = np.floor(times).astype(np.int64)
    del times
    value = np.maximum(1, np.rint(rng.gamma(gg.p, 1.0 / buyers.nu[owner]) * 100)).astype(np.int64)
    split = (rng.random(n_occasions) < shares.split_occasions) & (value >= 2)
    per_occasion = 1 + split
    order_owner = np.repeat(owner, per_occasion)
    order_day = np.repeat(day, per_occasion)
    cny = np.repeat(value, per_occasion)
    first = _segment_starts(per_occasion)[split]
    part = np.clip(np.rint(value[split] * rng.uniform(0.25, 0.75, len(first))), 1, None)
    part = np.minimum(part.astype(np.int64), value[split] - 1)
    cny[first] = part
    cny[first + 1] = value[split] - part
    n_completed = len(order_owner)
    del owner, day, value, per_occasion

    # Cancelled and refunded orders: extra orders of buyers (chosen in proportion to their
    # purchases) on a day between their first and last purchase day.
    n_cancelled = int(rng.binomial(n_completed, shares.cancelled))
    n_refunded = int(rng.binomial(n_completed, shares.refunded))
    n_extra = n_cancelled + n_refunded
    extra_owner = order_owner[rng.integers(0, n_completed, n_extra)]
    span = buyers.last_day[extra_owner] - buyers.first_day[extra_owner] + 1
    extra_day = buyers.first_day[extra_owner] + (rng.random(n_extra) * span).astype(np.int64)
    extra_cny = np.maximum(1, np.rint(rng.gamma(gg.p, 1.0 / buyers.nu[extra_owner]) * 100))
    status = np.zeros(n_completed + n_extra, np.int8)
    status[n_completed : n_completed + n_cancelled] = 1
    status[n_completed + n_cancelled :] = 2
    customer = buyers.index[np.concatenate([order_owner, extra_owner])].astype(np.int32)
    n_orders = len(customer)
    utc = (start_epoch_day + np.concatenate([order_day, extra_day])) * 86400
    utc += _time_of_day(rng, n_orders)
    # Customers who pay in a foreign currency do so for about half of their orders.
    currency = customers.foreign_currency[customer] * (rng.random(n_orders) < 0.5)
    currency = currency.astype(np.int8)
    cents = np.concatenate([cny, extra_cny.astype(np.int64)]) * 100
    cents = np.maximum(1, np.rint(cents / RATE_X100[currency])).astype(np.int64)
    del extra_owner, extra_day, extra_cny, cny

    # Loyalty points of completed orders (customer-major), rounded down per order.
    completed = _Completed(
        buyer=order_owner,
        day=order_day,
        points=cents[:n_completed] * RATE_X100[currency[:n_completed]] // 10_000,
    )

    # Export order: by time. The sort key carries the row index, so it is unique and any sort
    # algorithm gives the same (reproducible) order.
    order, utc = _sort_by_time(utc)
    customer, cents, currency, status = (
        customer[order],
        cents[order],
        currency[order],
        status[order],
    )
    del order
    ids = _ORDER_ID_BASE + np.cumsum(rng.integers(1, 4, n_orders))
    omni = customers.omni[customer]
    channel = customers.preferred_channel[customer].astype(np.int8)
    channel[omni] = _weighted(rng, CHANNEL_WEIGHTS, int(omni.sum()))
    discount = np.zeros(n_orders, dtype=np.int64)
    discounted = np.flatnonzero(rng.random(n_orders) < customers.discount_propensity[customer])
    discount[discounted] = np.rint(cents[discounted] * rng.uniform(0.05, 0.3, len(discounted)))
    changed = np.full(n_orders, -1, dtype=np.int64)
    for code, low, high in ((1, 0, 2 * 86400), (2, 86400, 30 * 86400)):
        rows = np.flatnonzero(status == code)
        delay = rng.integers(low, high + 1, len(rows))
        changed[rows] = np.minimum(utc[rows] + delay, cap_utc)
    orders = _Orders(
        id=ids,
        customer=customer,
        utc=utc,
        style=_timestamp_styles(rng, shares, n_orders),
        cents=cents,
        currency=currency,
        channel=channel,
        status=status,
        changed_utc=changed,
        discount_cents=discount,
    )
    counts = {
        "purchase_occasions": int(n_occasions),
        "split_occasions": int(split.sum()),
        "completed_orders": int(n_completed),
        "cancelled_orders": int(n_cancelled),
        "refunded_orders": int(n_refunded),
    }
    return orders, completed, counts


def _sort_by_time(utc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permutation that sorts ``utc`` (ties by position) and the sorted values."""
    n = len(utc)
    if n == 0:
        return np.empty(0, dtype=np.int64), utc
    base = int(utc.min())
    index_bits = max(1, int(n - 1).bit_length())
    if (int(utc.max()) - base) < (1 << (62 - index_bits)):
        key = ((utc - base) << index_bits) | np.arange(n, dtype=np.int64)
        key.sort()
        return key & ((1 << index_bits) - 1), (key >> index_bits) + base
    order = np.argsort(utc, kind="stable")
    return order, utc[order]


def _timestamp_styles(rng: np.random.Generator, shares: Shares, size: int) -> np.ndarray:
    """0 = local time with +08:00, 1 = UTC with Z, 2 = UTC without offset."""
    u = rng.random(size)
    return (u >= shares.local_offset).astype(np.int8) + (u >= shares.local_offset + shares.utc_z)


def _assign_signups(
    rng: np.random.Generator,
    customers: _Customers,
    orders: _Orders,
    day_weights: np.ndarray,
    start_epoch_day: int,
) -> None:
    """Sign-up before every order of the customer (prospects: a day in the window), then number
    customers in sign-up order."""
    n = customers.n
    first_order = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first_order, orders.customer, orders.utc)
    signup = np.empty(n, dtype=np.int64)
    buyer = customers.is_buyer
    nb = int(buyer.sum())
    quick = rng.random(nb) < 0.45
    lead = np.where(
        quick,
        rng.integers(60, 3600, nb),
        60 + rng.exponential(90 * 86400, nb).astype(np.int64),
    )
    signup[buyer] = first_order[buyer] - lead
    n_prospects = n - nb
    prospect_day = _weighted(rng, day_weights, n_prospects)
    signup[~buyer] = (start_epoch_day + prospect_day) * 86400 + _time_of_day(rng, n_prospects)
    customers.signup = signup
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(signup, kind="stable")] = np.arange(n)
    customers.number = rank + 1


# --------------------------------------------------------------------------------------------
# Tables of strings
# --------------------------------------------------------------------------------------------


def _orders_table(orders: _Orders, rows: np.ndarray) -> pa.Table:
    status = orders.status[rows]
    return pa.table(
        {
            "order_id": _digits(orders.id[rows], 9, "O"),
            "customer_id": _digits(orders.customer_number[rows], 7, "C"),
            "ordered_at": _format_timestamps(orders.utc[rows], orders.style[rows]),
            "amount": _format_money(orders.cents[rows]),
            "currency": _take(CURRENCIES, orders.currency[rows]),
            "channel": _take(CHANNELS, orders.channel[rows]),
            "status": _take(STATUSES, status),
            "status_changed_at": _format_timestamps(
                orders.changed_utc[rows], orders.style[rows], valid=status != 0
            ),
            "discount_amount": _format_money(orders.discount_cents[rows]),
        }
    )


def _empty_table(columns: Sequence[str]) -> pa.Table:
    return pa.table({name: pa.array([], pa.string()) for name in columns})


def _province_variants() -> pa.Array:
    """Per province: the clean name then messy spellings (case, surrounding spaces)."""
    variants = []
    for name, *_rest in PROVINCES:
        variants += [name, f" {name.lower()} ", name.upper(), name.lower(), f"{name} "]
    return pa.array(variants)


def _customers_table(rng: np.random.Generator, customers: _Customers, shares: Shares) -> pa.Table:
    """Rows in customer-id (sign-up) order; ages 18-80 at sign-up."""
    n = customers.n
    order = np.argsort(customers.number)
    number = customers.number[order]
    signup = customers.signup[order]
    gender = customers.gender[order]
    style = _timestamp_styles(rng, shares, n)
    age_years = np.clip(18 + rng.gamma(3.0, 5.5, n), 18, 79.9)
    birth_day = signup // 86400 - (age_years * 365.25).astype(np.int64)
    birth = _null_where(_format_dates(birth_day), rng.random(n) < shares.missing_birth_date)
    variant = np.where(rng.random(n) < shares.messy_province, rng.integers(1, 5, n), 0)
    province = _take(_province_variants(), customers.province[order] * 5 + variant)
    city_names, _province_of, _share = _city_table()
    surname = _weighted(rng, [w for _s, w in SURNAMES], n)
    given_f = rng.integers(0, len(GIVEN_NAMES_F), n)
    given_m = rng.integers(0, len(GIVEN_NAMES_M), n)
    given = pc.if_else(
        pa.array(gender == 1), _take(GIVEN_NAMES_M, given_m), _take(GIVEN_NAMES_F, given_f)
    )
    surname_text = _take([s for s, _w in SURNAMES], surname)
    full_name = pc.binary_join_element_wise(surname_text, given, " ")
    given_lower = pc.if_else(
        pa.array(gender == 1),
        _take([g.lower() for g in GIVEN_NAMES_M], given_m),
        _take([g.lower() for g in GIVEN_NAMES_F], given_f),
    )
    email = pc.binary_join_element_wise(
        given_lower,
        ".",
        _take([s.lower() for s, _w in SURNAMES], surname),
        pc.cast(pa.array(number), pa.string()),
        "@example.com",
        "",
    )
    # +86 100 xxxx xxxx: 100 is not a mobile prefix, so no real number is ever produced;
    # multiplying by a number coprime to 10^8 keeps them unique.
    scrambled = (number * 7_919 + 1_234_567) % 100_000_000
    phone = pc.binary_join_element_wise(
        _digits(scrambled // 10_000, 4, "+86 100 "), _digits(scrambled % 10_000, 4), " "
    )
    gender_text = _null_where(_take(("F", "M", ""), gender), gender == 2)
    return pa.table(
        {
            "customer_id": _digits(number, 7, "C"),
            "signed_up_at": _format_timestamps(signup, style),
            "birth_date": birth,
            "gender": gender_text,
            "country": _take(("CN",), np.zeros(n, dtype=np.int64)),
            "province": province,
            "city": _take(city_names, customers.city[order]),
            "email": email,
            "phone": phone,
            "full_name": full_name,
            "acquisition_channel": _take(ACQUISITION_CHANNELS, customers.acquisition[order]),
            "marketing_consent": _take(
                ("false", "true"), (rng.random(n) < shares.marketing_consent).astype(np.int64)
            ),
        }
    )


def _products_table() -> pa.Table:
    ids, names, categories = [], [], []
    for c, category in enumerate(CATEGORIES):
        adjectives, nouns = PRODUCT_WORDS[category]
        for k in range(PRODUCTS_PER_CATEGORY):
            ids.append(f"P{10001 + c * PRODUCTS_PER_CATEGORY + k:05d}")
            names.append(f"{adjectives[k // len(nouns)]} {nouns[k % len(nouns)]}")
            categories.append(category)
    return pa.table({"product_id": ids, "product_name": names, "category": categories})


_WINTER = np.isin(np.arange(13), (11, 12, 1, 2))
_SUMMER = np.isin(np.arange(13), (6, 7, 8))


def _month_of(epoch_days: np.ndarray) -> np.ndarray:
    """Calendar month (1-12) of days since 1970-01-01, via a table of the days in range."""
    low, high = int(epoch_days.min()), int(epoch_days.max())
    days = np.datetime64("1970-01-01") + np.arange(low, high + 1)
    table = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    return table[epoch_days - low]


def _items_table(
    orders: _Orders, customers: _Customers, rows: np.ndarray, order_ids: pa.Array, seed: int
) -> pa.Table:
    """1-4 lines per order whose quantity x unit_price sums to the amount to the cent.

    Random numbers are keyed by the order's position, so the lines of an order do not depend
    on how the orders are chunked."""
    key = rows.astype(np.uint64)
    cents = orders.cents[rows]
    u = _unit(_hash64(key, 1, seed), 0)
    lines = 1 + (u >= 0.45).astype(np.int64) + (u >= 0.75) + (u >= 0.90)
    lines = np.where(cents < 500, 1, np.where(cents < 2000, np.minimum(lines, 2), lines))
    starts = _segment_starts(lines)
    line_order = np.repeat(np.arange(len(rows)), lines)
    line_no = np.arange(len(line_order)) - starts[line_order]
    is_last = line_no == lines[line_order] - 1
    bits = _hash64(key[line_order] * np.uint64(8) + line_no.astype(np.uint64), 2, seed)
    uq = _unit(bits, 0)
    quantity = np.where(is_last, 1, 1 + (uq >= 0.8).astype(np.int64) + (uq >= 0.95))
    weight = 0.2 + 0.8 * _unit(bits, 1)
    share = cents[line_order] * weight / np.add.reduceat(weight, starts)[line_order]
    unit = np.maximum(1, np.floor(share / quantity)).astype(np.int64)
    allocated = np.add.reduceat(np.where(is_last, 0, unit * quantity), starts)
    unit = np.where(is_last, (cents - allocated)[line_order], unit)

    customer = orders.customer[rows][line_order]
    month = _month_of(orders.utc[rows] // 86400)[line_order]
    cumulative = np.cumsum(CATEGORY_WEIGHTS) / np.sum(CATEGORY_WEIGHTS)
    u_choice = _unit(bits, 2)
    base = np.minimum(
        np.searchsorted(cumulative, _unit(bits, 3), side="right"), len(CATEGORIES) - 1
    )
    base[_SUMMER[month] & (base == OUTERWEAR)] = CATEGORIES.index("apparel")
    category = np.where(
        u_choice < 0.4,
        customers.favorite_category[customer],
        np.where(customers.cold[customer] & _WINTER[month] & (u_choice < 0.65), OUTERWEAR, base),
    )
    popularity = _unit(_hash64(bits, 3, seed), 0) ** 1.6
    product = category * PRODUCTS_PER_CATEGORY + (popularity * PRODUCTS_PER_CATEGORY).astype(
        np.int64
    )
    return pa.table(
        {
            "order_id": order_ids.take(pa.array(line_order)),
            "product_id": _product_ids().take(pa.array(product)),
            "quantity": _take(("0", "1", "2", "3"), quantity),
            "unit_price": _format_money(unit),
        }
    )


def _product_ids() -> pa.Array:
    return _digits(10001 + np.arange(len(CATEGORIES) * PRODUCTS_PER_CATEGORY), 5, "P")


# --------------------------------------------------------------------------------------------
# Dirty rows
# --------------------------------------------------------------------------------------------


@dataclass
class _DirtyPlan:
    rows: pa.Table  # the extra rows, in file order
    insert_before: np.ndarray  # index of the clean row each extra row is written before
    truth: list[tuple[str, str, int]]  # (id, expected_reason, row_number)


def _row_numbers(insert_before: np.ndarray, clean_rows: np.ndarray) -> np.ndarray:
    """1-based row numbers of clean rows once the extra rows are inserted."""
    return clean_rows + np.searchsorted(insert_before, clean_rows, side="right") + 1


def _finish_plan(
    parts: list[tuple[pa.Table, np.ndarray, list[str]]],
    originals: list[tuple[str, str, int]],
    columns: Sequence[str],
    id_column: str,
) -> _DirtyPlan:
    """Sort the extra rows by position and compute every listed row's number."""
    if not parts:
        return _DirtyPlan(_empty_table(columns), np.empty(0, np.int64), [])
    table = pa.concat_tables([part[0] for part in parts])
    before = np.concatenate([part[1] for part in parts]).astype(np.int64)
    reasons = [reason for part in parts for reason in part[2]]
    order = np.argsort(before, kind="stable")
    table = table.take(pa.array(order))
    before = before[order]
    ids = table.column(id_column).to_pylist()
    truth = [(ids[j] or "", reasons[order[j]], int(before[j]) + j + 1) for j in range(len(order))]
    if originals:
        clean = np.array([row for _id, _reason, row in originals], dtype=np.int64)
        numbers = _row_numbers(before, clean)
        truth += [
            (oid, reason, int(number))
            for (oid, reason, _r), number in zip(originals, numbers, strict=True)
        ]
    truth.sort(key=lambda row: row[2])
    return _DirtyPlan(table, before, truth)


def _replace(table: pa.Table, column: str, values: Any) -> pa.Table:
    index = table.schema.get_field_index(column)
    if not isinstance(values, pa.Array):
        values = pa.array(values, pa.string())
    return table.set_column(index, column, values)


def _plan_dirty_orders(
    rng: np.random.Generator, orders: _Orders, dirty_rate: float, n_customers: int
) -> _DirtyPlan:
    n = len(orders.id)
    per_reason = 0 if dirty_rate <= 0 or n == 0 else max(1, round(dirty_rate * n / 13))
    if per_reason == 0:
        return _finish_plan([], [], ORDER_COLUMNS, "order_id")
    parts: list[tuple[pa.Table, np.ndarray, list[str]]] = []
    originals: list[tuple[str, str, int]] = []
    completed = np.flatnonzero(orders.status == 0)
    not_completed = np.flatnonzero(orders.status != 0)

    def after(source: np.ndarray) -> np.ndarray:
        return np.minimum(source + 1 + rng.integers(0, 200, len(source)), n)

    # Exact duplicates of completed orders: only the copy is rejected.
    source = rng.choice(completed, min(per_reason, len(completed)), replace=False)
    exact = source
    parts.append((_orders_table(orders, source), after(source), ["exact_duplicate"] * len(source)))
    # Conflicting duplicates: same id, another amount. Both rows are rejected, so the original
    # is taken from cancelled/refunded orders, which are not purchases.
    pool = not_completed
    if len(pool) < per_reason:  # tiny runs only: fall back to completed orders
        pool = np.setdiff1d(np.arange(n), exact)
    source = np.sort(rng.choice(pool, min(per_reason, len(pool)), replace=False))
    copies = _orders_table(orders, source)
    copies = _replace(
        copies, "amount", _format_money(orders.cents[source] + rng.integers(100, 5000, len(source)))
    )
    parts.append((copies, after(source), ["conflicting_duplicate"] * len(source)))
    original_ids = _digits(orders.id[source], 9, "O").to_pylist()
    originals += [
        (oid, "conflicting_duplicate", int(row))
        for oid, row in zip(original_ids, source, strict=True)
    ]

    # Rows with a fresh order id taken from the gaps of the id sequence, written where that id
    # belongs in time, with one defect each.
    free = np.flatnonzero(np.diff(orders.id, prepend=_ORDER_ID_BASE) >= 2)
    fresh_reasons = [
        r for r in DIRTY_ORDER_REASONS if r not in ("exact_duplicate", "conflicting_duplicate")
    ]
    count = min(len(free), per_reason * len(fresh_reasons))
    position = rng.choice(free, count, replace=False)
    rows = _orders_table(orders, position)
    rows = _replace(rows, "order_id", _digits(orders.id[position] - 1, 9, "O"))
    # A new amount (same currency), so the row is not a near-copy of its neighbour.
    amount_cents = np.maximum(1, np.rint(orders.cents[position] * rng.uniform(0.5, 1.5, count)))
    rows = _replace(rows, "amount", _format_money(amount_cents.astype(np.int64)))
    columns = {name: rows.column(name).to_pylist() for name in ORDER_COLUMNS}
    reasons = [fresh_reasons[k // per_reason] for k in range(count)]
    before = position.copy()
    unknown_ids = n_customers + 1 + rng.choice(9_999_999 - n_customers, count, replace=False)
    for k, reason in enumerate(reasons):
        if reason == "missing_customer_id":
            columns["customer_id"][k] = None
        elif reason == "missing_order_id":
            columns["order_id"][k] = None
        elif reason == "unparseable_ordered_at":
            columns["ordered_at"][k] = "31/02/2024 25:00"
        elif reason == "missing_ordered_at":
            columns["ordered_at"][k] = None
        elif reason == "unparseable_amount":
            columns["amount"][k] = "12,5x"
        elif reason == "negative_amount":
            columns["amount"][k] = "-" + columns["amount"][k]
        elif reason == "absurd_amount":
            # Above the limit even after conversion from the cheapest currency (HKD 0.92).
            columns["amount"][k] = f"{int(rng.integers(2_000_000, 9_999_999))}.{k % 100:02d}"
        elif reason == "future_ordered_at":
            text = columns["ordered_at"][k].replace("-02-29T", "-02-28T")
            columns["ordered_at"][k] = "2099" + text[4:]
        elif reason == "unknown_status":
            columns["status"][k] = "lost"
        elif reason == "unknown_currency":
            columns["currency"][k] = "XYZ"
        elif reason == "unknown_customer":
            columns["customer_id"][k] = f"C{int(unknown_ids[k]):07d}"
    parts.append(
        (
            pa.table({name: pa.array(columns[name], pa.string()) for name in ORDER_COLUMNS}),
            before,
            reasons,
        )
    )
    return _finish_plan(parts, originals, ORDER_COLUMNS, "order_id")


def _plan_dirty_customers(
    rng: np.random.Generator, table: pa.Table, customers: _Customers, dirty_rate: float
) -> _DirtyPlan:
    n = table.num_rows
    per_reason = 0 if dirty_rate <= 0 or n == 0 else max(1, round(dirty_rate * n / 3))
    if per_reason == 0:
        return _finish_plan([], [], CUSTOMER_COLUMNS, "customer_id")
    parts: list[tuple[pa.Table, np.ndarray, list[str]]] = []
    originals: list[tuple[str, str, int]] = []

    def after(source: np.ndarray) -> np.ndarray:
        return np.minimum(source + 1 + rng.integers(0, 200, len(source)), n)

    # Prospects (rows in customer-number order) are the originals of conflicting duplicates, so
    # rejecting both rows never hides a customer who has orders.
    row_is_prospect = ~customers.is_buyer[np.argsort(customers.number)]
    prospects = np.flatnonzero(row_is_prospect)
    buyers = np.flatnonzero(~row_is_prospect)
    k = min(per_reason, len(prospects))
    conflicting = np.sort(rng.choice(prospects, k, replace=False))
    rest = np.setdiff1d(np.arange(n), conflicting)
    exact = np.sort(rng.choice(rest, min(per_reason, len(rest)), replace=False))
    template = rng.choice(buyers if len(buyers) else np.arange(n), per_reason)

    parts.append((table.take(pa.array(exact)), after(exact), ["exact_duplicate"] * len(exact)))
    copies = table.take(pa.array(conflicting))
    copies = _replace(
        copies,
        "email",
        [f"updated.{row}@example.com" for row in conflicting.tolist()],
    )
    parts.append((copies, after(conflicting), ["conflicting_duplicate"] * k))
    ids = table.column("customer_id").take(pa.array(conflicting)).to_pylist()
    originals += [
        (cid, "conflicting_duplicate", int(row)) for cid, row in zip(ids, conflicting, strict=True)
    ]
    missing = table.take(pa.array(template))
    missing = _replace(missing, "customer_id", pa.nulls(per_reason, pa.string()))
    missing = _replace(missing, "email", [f"guest.{j}@example.com" for j in range(per_reason)])
    parts.append(
        (missing, rng.integers(0, n + 1, per_reason), ["missing_customer_id"] * per_reason)
    )
    return _finish_plan(parts, originals, CUSTOMER_COLUMNS, "customer_id")


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


class _TableWriter:
    """Append string tables to one CSV or Parquet file."""

    LOW_CARDINALITY = (
        "currency",
        "channel",
        "status",
        "quantity",
        "product_id",
        "country",
        "province",
        "city",
        "gender",
        "acquisition_channel",
        "marketing_consent",
        "category",
    )

    def __init__(self, path: Path, columns: Sequence[str], fmt: str) -> None:
        self.schema = pa.schema([(name, pa.string()) for name in columns])
        self.fmt = fmt
        self.rows = 0
        if fmt == "csv":
            self._writer: Any = pacsv.CSVWriter(str(path), self.schema)
        else:
            self._writer = pq.ParquetWriter(
                str(path),
                self.schema,
                compression="snappy",
                write_statistics=False,
                use_dictionary=[c for c in columns if c in self.LOW_CARDINALITY],
            )

    def write(self, table: pa.Table) -> None:
        table = table.cast(self.schema)
        self.rows += table.num_rows
        if self.fmt == "csv":
            self._writer.write_table(table)
        elif table.num_rows:
            self._writer.write_table(table, row_group_size=max(table.num_rows, 1))

    def close(self) -> None:
        self._writer.close()


def _write_chunk(
    order_writer: _TableWriter,
    orders: pa.Table,
    item_writer: _TableWriter | None,
    items: pa.Table | None,
) -> None:
    order_writer.write(orders)
    if item_writer is not None and items is not None:
        item_writer.write(items)


def _with_inserted(
    clean: pa.Table, clean_index: np.ndarray, plan: _DirtyPlan, lo: int, hi: int, last: bool
) -> pa.Table:
    """Merge the extra rows that belong before clean rows ``lo..hi-1`` (and at the end)."""
    left = np.searchsorted(plan.insert_before, lo, side="left")
    right = np.searchsorted(plan.insert_before, hi, side="right" if last else "left")
    if left == right:
        return clean
    extra = plan.rows.slice(left, right - left)
    keys = np.concatenate([clean_index.astype(np.float64), plan.insert_before[left:right] - 0.5])
    order = np.argsort(keys, kind="stable")
    return pa.concat_tables([clean.cast(extra.schema), extra]).take(pa.array(order))


def _remove_previous(out: Path) -> None:
    for name in TABLE_FILES:
        for fmt in FORMATS:
            (out / f"{name}.{fmt}").unlink(missing_ok=True)
    surveys = out / "surveys"
    if surveys.is_dir():
        for path in list(surveys.glob("responses_*.csv")) + list(surveys.glob("responses_*.json")):
            path.unlink()
    for name in TRUTH_FILES:
        (out / "truth" / name).unlink(missing_ok=True)


def _write_small_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_whole(path: Path, table: pa.Table, fmt: str) -> None:
    writer = _TableWriter(path, table.column_names, fmt)
    writer.write(table)
    writer.close()


# --------------------------------------------------------------------------------------------
# Redemptions and surveys
# --------------------------------------------------------------------------------------------


def _redemptions(
    rng: np.random.Generator,
    buyers: _Buyers,
    customers: _Customers,
    completed: _Completed,
    shares: Shares,
    start_epoch_day: int,
    n_days: int,
) -> tuple[pa.Table, list[str]]:
    """Points spent by a subset of repeat customers.

    Each redemption follows an anchor purchase day by 15-59 days (after the 14-day return
    window, so the points are no longer pending) and spends 20-80 % of the points earned on the
    days after the previous anchor (and within 180 days before this one). The windows are
    disjoint, redemptions of a customer are in anchor order, and the points used are at most 239
    days old, so with first-in-first-out use and a 12-month expiry the balance always covers
    them. ~3 % are replaced by amounts above anything the customer could hold.
    """
    nb = len(buyers.index)
    counts = np.bincount(completed.buyer, minlength=nb)
    starts = _segment_starts(counts)
    repeat = buyers.draw.repeat_purchases >= 1
    redeemer = repeat & (rng.random(nb) < shares.redeemers)
    wanted = np.minimum(1 + rng.poisson(0.8, nb), counts) * redeemer
    # Pick `wanted` distinct anchor orders per redeemer: rank a random key within the customer.
    candidates = np.flatnonzero(redeemer[completed.buyer])
    owner = completed.buyer[candidates]
    order = np.lexsort((rng.random(len(candidates)), owner))
    candidates, owner = candidates[order], owner[order]
    rank = np.arange(len(candidates)) - np.searchsorted(owner, owner, side="left")
    anchors = np.sort(candidates[rank < wanted[owner]])
    owner = completed.buyer[anchors]
    anchor_day = completed.day[anchors]
    key = completed.buyer.astype(np.int64) * 1_000_000 + completed.day
    cum = np.concatenate(([0], np.cumsum(completed.points)))
    first_of_customer = np.ones(len(anchors), dtype=bool)
    first_of_customer[1:] = owner[1:] != owner[:-1]
    previous_day = np.where(first_of_customer, -1_000_000, np.concatenate(([0], anchor_day[:-1])))
    window_start = np.maximum(previous_day + 1, anchor_day - 180)
    hi = np.searchsorted(key, owner * 1_000_000 + anchor_day, side="right")
    lo = np.searchsorted(key, owner * 1_000_000 + window_start, side="left")
    earned = cum[hi] - cum[np.minimum(lo, hi)]
    points = (np.floor(rng.uniform(0.2, 0.8, len(anchors)) * earned / 10) * 10).astype(np.int64)
    day = anchor_day + rng.integers(15, 60, len(anchors))
    utc = (start_epoch_day + day) * 86400 + _time_of_day(rng, len(anchors))
    # Keep a customer's redemptions in anchor order (strictly increasing times).
    segment = np.cumsum(first_of_customer) - 1
    shifted = utc - np.arange(len(utc)) + segment.astype(np.int64) * 10**12
    utc = np.maximum.accumulate(shifted) - segment.astype(np.int64) * 10**12 + np.arange(len(utc))
    keep = (points >= 10) & (utc < (start_epoch_day + n_days) * 86400 - LOCAL_OFFSET_SECONDS)
    owner, utc, points = owner[keep], utc[keep], points[keep]
    over = rng.random(len(points)) < shares.over_redemptions
    lifetime = cum[starts + counts][owner] - cum[starts][owner]
    # Above 4x lifetime points: more than any level x birthday multiplier could have earned.
    points = np.where(over, (lifetime * 4 // 10 + 100) * 10, points)
    order = np.argsort(utc, kind="stable")
    owner, utc, points, over = owner[order], utc[order], points[order], over[order]
    number = customers.number[buyers.index[owner]]
    style = _timestamp_styles(rng, shares, len(utc))
    ids = _digits(np.arange(1, len(utc) + 1), 9, "R")
    table = pa.table(
        {
            "redemption_id": ids,
            "customer_id": _digits(number, 7, "C"),
            "redeemed_at": _format_timestamps(utc, style),
            "points": pc.cast(pa.array(points), pa.string()),
        }
    )
    over_ids = ids.filter(pa.array(over)).to_pylist()
    return table, over_ids


def _adjustments(
    rng: np.random.Generator,
    buyers: _Buyers,
    customers: _Customers,
    shares: Shares,
    start_epoch_day: int,
) -> pa.Table:
    """Manual point adjustments (a customer-service file): one for a share of buyers, on a day
    between their first and last purchase day, with a reason code; a correction takes 10-100
    points (the ledger takes at most the available balance), the others give 50-500."""
    chosen = np.flatnonzero(rng.random(len(buyers.index)) < shares.adjusted)
    span = buyers.last_day[chosen] - buyers.first_day[chosen] + 1
    day = buyers.first_day[chosen] + (rng.random(len(chosen)) * span).astype(np.int64)
    utc = (start_epoch_day + day) * 86400 + _time_of_day(rng, len(chosen))
    reason = rng.choice(len(ADJUSTMENT_REASONS), len(chosen), p=ADJUSTMENT_REASON_WEIGHTS)
    taking = np.asarray(ADJUSTMENT_REASONS)[reason] == "correction"
    points = np.where(
        taking, -rng.integers(1, 11, len(chosen)) * 10, rng.integers(5, 51, len(chosen)) * 10
    )
    order = np.argsort(utc, kind="stable")
    chosen, utc, points, reason = chosen[order], utc[order], points[order], reason[order]
    return pa.table(
        {
            "adjustment_id": _digits(np.arange(1, len(chosen) + 1), 8, "A"),
            "customer_id": _digits(customers.number[buyers.index[chosen]], 7, "C"),
            "points": pc.cast(pa.array(points), pa.string()),
            "reason": pa.array(np.asarray(ADJUSTMENT_REASONS)[reason]),
            "adjusted_at": _format_timestamps(utc, _timestamp_styles(rng, shares, len(utc))),
        }
    )


def _surveys(
    rng: np.random.Generator,
    buyers: _Buyers,
    customers: _Customers,
    completed: _Completed,
    shares: Shares,
    start_epoch_day: int,
    n_days: int,
) -> list[dict[str, Any]]:
    """Survey responses of ~12 % of buyers; NPS and satisfaction rise with spend and with the
    customer still being active, price is named more by small spenders, quality by big ones."""
    nb = len(buyers.index)
    if nb == 0:
        return []
    spend = np.bincount(completed.buyer, weights=completed.points, minlength=nb)
    log_spend = np.log1p(spend)
    z = (log_spend - log_spend.mean()) / (log_spend.std() or 1.0)
    active = ~buyers.draw.dropped_out
    respondent = np.flatnonzero(rng.random(nb) < shares.survey_respondents)
    times = 1 + (rng.random(len(respondent)) < 0.15)
    who = np.repeat(respondent, times)
    m = len(who)
    span = n_days - buyers.first_day[who]
    day = buyers.first_day[who] + (rng.random(m) * span).astype(np.int64)
    utc = (start_epoch_day + day) * 86400 + _time_of_day(rng, m)
    score = 0.6 * z[who] + 0.6 * active[who] - 0.3 + rng.normal(0, 0.8, m)
    nps = np.clip(np.rint(7.0 + 1.5 * score), 0, 10).astype(int)
    satisfaction = np.clip(np.rint(3.7 + 0.7 * score + rng.normal(0, 0.4, m)), 1, 5).astype(int)
    tag_probability = np.column_stack(
        [
            0.35 + 0.15 * (z[who] > 0),  # quality
            0.40 - 0.20 * (z[who] > 0),  # price
            np.full(m, 0.25),  # service
            np.full(m, 0.10),  # customization
            np.full(m, 0.20),  # delivery
        ]
    )
    tags = rng.random((m, len(NEED_TAGS))) < tag_probability
    tags[np.arange(m), rng.integers(0, len(NEED_TAGS), m)] |= ~tags.any(axis=1)
    comment_pick = rng.integers(0, 6, m)
    no_comment = rng.random(m) < 0.2
    style = _timestamp_styles(rng, shares, m)
    order = np.argsort(utc, kind="stable")
    submitted = _format_timestamps(utc[order], style[order]).to_pylist()
    number = customers.number[buyers.index[who[order]]]
    quarter_of = (np.datetime64("1970-01-01") + utc[order] // 86400).astype("datetime64[M]")
    months = quarter_of.astype(np.int64)
    responses = []
    for j, k in enumerate(order.tolist()):
        bucket = "promoter" if nps[k] >= 9 else "passive" if nps[k] >= 7 else "detractor"
        responses.append(
            {
                "response_id": f"S{j + 1:08d}",
                "customer_id": f"C{int(number[j]):07d}",
                "submitted_at": submitted[j],
                "nps": int(nps[k]),
                "satisfaction": int(satisfaction[k]),
                "comment": "" if no_comment[k] else COMMENTS[bucket][comment_pick[k]],
                "need_tags": [t for t, on in zip(NEED_TAGS, tags[k], strict=True) if on],
                "_quarter": (int(months[j]) // 12 + 1970, int(months[j]) % 12 // 3 + 1),
            }
        )
    return responses


def _write_surveys(out: Path, responses: list[dict[str, Any]]) -> list[str]:
    """Quarterly files; every third quarter is JSON (a list of objects) instead of CSV."""
    folder = out / "surveys"
    folder.mkdir(parents=True, exist_ok=True)
    by_quarter: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for response in responses:
        by_quarter.setdefault(response["_quarter"], []).append(response)
    written = []
    for (year, quarter), rows in sorted(by_quarter.items()):
        stem = f"responses_{year}_q{quarter}"
        records = [{k: v for k, v in row.items() if k != "_quarter"} for row in rows]
        if (year * 4 + quarter) % 3 == 0:
            path = folder / f"{stem}.json"
            text = "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n"
            path.write_text(text, encoding="utf-8")
        else:
            path = folder / f"{stem}.csv"
            _write_small_csv(
                path,
                SURVEY_COLUMNS,
                [
                    [r[c] if c != "need_tags" else "|".join(r[c]) for c in SURVEY_COLUMNS]
                    for r in records
                ],
            )
        written.append(path.name)
    return written


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def _parse_date(value: str | dt.date, name: str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a date; write it as YYYY-MM-DD.") from None


def generate(
    out_dir: str | Path,
    customers: int = DEFAULT_CUSTOMERS,
    seed: int = DEFAULT_SEED,
    fmt: str = "csv",
    dirty_rate: float = 0.0,
    start: str | dt.date = DEFAULT_START,
    end: str | dt.date = DEFAULT_END,
    items: bool = True,
    quiet: bool = False,
    bg_nbd: BgNbdParams | None = None,
    gamma_gamma: GammaGammaParams | None = None,
    shares: Shares | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> dict[str, Any]:
    """Write the demo exports and their truth to ``out_dir``; return the row counts.

    ``chunk_rows`` only bounds memory (orders are formatted and written that many at a time);
    it does not change the output.
    """
    started = time.perf_counter()
    start_date, end_date = _parse_date(start, "start"), _parse_date(end, "end")
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not supported; use one of {', '.join(FORMATS)}.")
    if not 1 <= customers <= MAX_CUSTOMERS:
        raise ValueError(
            f"customers={customers} is out of range; use 1 to {MAX_CUSTOMERS:,} "
            "(customer ids have 7 digits and unknown-customer rows need free ids)."
        )
    if not 0.0 <= dirty_rate <= 0.5:
        raise ValueError(f"dirty_rate={dirty_rate} must be between 0 and 0.5 (a fraction).")
    if end_date <= start_date:
        raise ValueError(f"end {end_date} must be after start {start_date}.")
    if seed < 0:
        raise ValueError(f"seed={seed} must be zero or positive.")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows={chunk_rows} must be positive.")
    bg = bg_nbd or BgNbdParams()
    gg = gamma_gamma or GammaGammaParams()
    shares = shares or Shares()
    if gg.q <= 1:
        raise ValueError(f"gamma_gamma.q={gg.q} must be above 1 (the mean spend is p*v/(q-1)).")

    progress = _Progress(quiet)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(exist_ok=True)
    _remove_previous(out)

    n_days = (end_date - start_date).days + 1
    start_epoch_day = (start_date - _EPOCH).days
    end_epoch_day = start_epoch_day + n_days - 1
    cap_utc = (end_epoch_day + 1) * 86400 - LOCAL_OFFSET_SECONDS - 1  # end 23:59:59 +08:00
    # Children of one SeedSequence: adding a stream at the end changes no earlier file.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(10)]
    day_weights = _acquisition_day_weights(start_date, n_days)

    progress(f"simulating {customers:,} customers")
    people = _simulate_customers(streams[0], customers, shares)
    buyers = _simulate_buyers(streams[1], people, day_weights, bg, gg)
    orders, completed, counts = _build_orders(
        streams[2], people, buyers, gg, shares, start_epoch_day, cap_utc
    )
    _assign_signups(streams[3], people, orders, day_weights, start_epoch_day)
    orders.customer_number = people.number[orders.customer]
    n_orders = len(orders.id)
    progress("simulated orders", n_orders, n_orders)

    # Customers and products.
    customer_table = _customers_table(streams[4], people, shares)
    customer_plan = _plan_dirty_customers(streams[5], customer_table, people, dirty_rate)
    writer = _TableWriter(out / f"customers.{fmt}", CUSTOMER_COLUMNS, fmt)
    writer.write(
        _with_inserted(customer_table, np.arange(customers), customer_plan, 0, customers, last=True)
    )
    writer.close()
    customer_rows = writer.rows
    del customer_table
    _write_whole(out / f"products.{fmt}", _products_table(), fmt)
    progress("customers", customer_rows, customer_rows)

    # Orders (and their lines), chunk by chunk.
    plan = _plan_dirty_orders(streams[6], orders, dirty_rate, customers)
    order_writer = _TableWriter(out / f"orders.{fmt}", ORDER_COLUMNS, fmt)
    item_writer = _TableWriter(out / f"order_items.{fmt}", ITEM_COLUMNS, fmt) if items else None
    item_seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
    # Formatting (numpy/Arrow) and writing (Arrow, releases the GIL) overlap on two cores: one
    # thread writes chunk k while this one formats chunk k + 1; at most two chunks wait.
    reported = 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: deque[Future[None]] = deque()
        for lo in range(0, max(n_orders, 1), chunk_rows):
            hi = min(lo + chunk_rows, n_orders)
            rows = np.arange(lo, hi)
            table = _orders_table(orders, rows)
            lines = None
            if item_writer is not None and len(rows):
                lines = _items_table(orders, people, rows, table.column(0), item_seed)
            merged = _with_inserted(table, rows, plan, lo, hi, last=hi >= n_orders)
            pending.append(pool.submit(_write_chunk, order_writer, merged, item_writer, lines))
            while len(pending) > 1:
                pending.popleft().result()
            if hi - reported >= 1_000_000 or hi >= n_orders:
                progress("orders", hi, n_orders)
                reported = hi
        while pending:
            pending.popleft().result()
    order_writer.close()
    if item_writer is not None:
        item_writer.close()

    redemptions, over_ids = _redemptions(
        streams[7], buyers, people, completed, shares, start_epoch_day, n_days
    )
    _write_whole(out / f"redemptions.{fmt}", redemptions, fmt)
    progress("redemptions", redemptions.num_rows, redemptions.num_rows)
    responses = _surveys(streams[8], buyers, people, completed, shares, start_epoch_day, n_days)
    survey_files = _write_surveys(out, responses)
    adjustments = _adjustments(streams[9], buyers, people, shares, start_epoch_day)
    _write_whole(out / f"point_adjustments.{fmt}", adjustments, fmt)
    progress("point adjustments", adjustments.num_rows, adjustments.num_rows)
    progress("survey responses", len(responses), len(responses))

    # Truth.
    _write_small_csv(
        out / "truth" / "dirty_orders.csv",
        ("order_id", "expected_reason", "row_number"),
        plan.truth,
    )
    _write_small_csv(
        out / "truth" / "dirty_customers.csv",
        ("customer_id", "expected_reason", "row_number"),
        customer_plan.truth,
    )
    _write_small_csv(
        out / "truth" / "over_redemptions.csv",
        ("redemption_id", "expected_reason"),
        [(rid, "over_redemption") for rid in over_ids],
    )
    _write_truth_customers(out / "truth" / "customers.parquet", people, buyers, start_epoch_day)
    summary_counts = {
        "customers": customers,
        "buyers": int(len(buyers.index)),
        "prospects": int(customers - len(buyers.index)),
        **counts,
        "orders": int(n_orders),
        "repeat_purchases": int(buyers.draw.repeat_purchases.sum()),
        "repeat_purchase_days": int(buyers.repeat_days.sum()),
        "dropped_out": int(buyers.draw.dropped_out.sum()),
        "order_rows": order_writer.rows,
        "dirty_order_rows": int(plan.rows.num_rows),
        "customer_rows": customer_rows,
        "dirty_customer_rows": int(customer_plan.rows.num_rows),
        "order_items": item_writer.rows if item_writer is not None else 0,
        "products": len(CATEGORIES) * PRODUCTS_PER_CATEGORY,
        "redemptions": redemptions.num_rows,
        "over_redemptions": len(over_ids),
        "point_adjustments": adjustments.num_rows,
        "survey_responses": len(responses),
        "survey_files": len(survey_files),
    }
    params = {
        "time_unit": "day",
        "bg_nbd": asdict(bg),
        "gamma_gamma": asdict(gg),
        "seed": seed,
        "customers": customers,
        "start": start_date.isoformat(),
        "end": end_date.isoformat(),
        "format": fmt,
        "dirty_rate": dirty_rate,
        "items": items,
        "shares": asdict(shares),
        "currency_rates_to_cny": {
            c: int(r) / 100 for c, r in zip(CURRENCIES, RATE_X100, strict=True)
        },
        "purchase_day": "UTC date; every order is between 08:00 and 23:59:59 +08:00, so it is "
        "also the China date",
        "counts": summary_counts,
    }
    (out / "truth" / "params.json").write_text(
        json.dumps(params, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    progress("done")
    return {
        "out_dir": str(out),
        "format": fmt,
        **summary_counts,
        "elapsed_seconds": round(time.perf_counter() - started, 3),
    }


def _write_truth_customers(
    path: Path, customers: _Customers, buyers: _Buyers, start_epoch_day: int
) -> None:
    """Latent values per customer, in customer-id order; purchase fields are null for
    prospects."""
    n = customers.n
    slot = np.full(n, -1, dtype=np.int64)
    slot[buyers.index] = np.arange(len(buyers.index))
    order = np.argsort(customers.number)
    s = slot[order]
    buyer = s >= 0
    si = np.where(buyer, s, 0)

    def column(values: np.ndarray, kind: pa.DataType, valid: np.ndarray | None = None) -> pa.Array:
        """A per-buyer array in customer order; null for prospects (and where not valid)."""
        if len(values) == 0:
            return pa.nulls(n, kind)
        keep = buyer if valid is None else buyer & valid[si]
        return pa.array(values[si], kind, mask=~keep)

    draw = buyers.draw
    counts = draw.repeat_purchases
    dropout_day = np.full(len(counts), -1, dtype=np.int64)
    if len(draw.repeat_times):
        last = np.cumsum(counts) - 1
        has = counts > 0
        last_time = np.zeros(len(counts))
        last_time[has] = draw.repeat_times[last[has]]
        dropout_day = np.floor(buyers.t0 + last_time).astype(np.int64)
    dropped = draw.dropped_out
    table = pa.table(
        {
            "customer_id": _digits(customers.number[order], 7, "C"),
            "is_prospect": pa.array(~buyer),
            "lambda_per_day": column(buyers.lam, pa.float64()),
            "p_dropout": column(buyers.p, pa.float64()),
            "nu": column(buyers.nu, pa.float64()),
            "first_purchase_date": column(
                (start_epoch_day + buyers.first_day).astype(np.int32), pa.date32()
            ),
            "observation_days": column(buyers.T, pa.float64()),
            "repeat_purchases": column(counts, pa.int64()),
            "repeat_purchase_days": column(buyers.repeat_days, pa.int64()),
            "dropped_out": column(dropped, pa.bool_()),
            "dropout_date": column(
                (start_epoch_day + dropout_day).astype(np.int32), pa.date32(), valid=dropped
            ),
        }
    )
    pq.write_table(table, str(path))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m customer_warehouse.demo_data",
        description="Write deterministic demo exports (orders, customers, order_items, products,"
        " redemptions, surveys) with their ground truth.",
    )
    parser.add_argument(
        "--out", required=True, help="output folder (its generated files are replaced)"
    )
    parser.add_argument("--customers", type=int, default=DEFAULT_CUSTOMERS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--format", choices=FORMATS, default="csv", dest="fmt")
    parser.add_argument(
        "--dirty-rate",
        type=float,
        default=0.0,
        help="extra bad rows as a fraction of orders (0 to 0.5)",
    )
    parser.add_argument("--start", default=DEFAULT_START, help="first day, YYYY-MM-DD")
    parser.add_argument("--end", default=DEFAULT_END, help="last day, YYYY-MM-DD")
    parser.add_argument("--no-items", action="store_true", help="skip order_items")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    try:
        summary = generate(
            args.out,
            customers=args.customers,
            seed=args.seed,
            fmt=args.fmt,
            dirty_rate=args.dirty_rate,
            start=args.start,
            end=args.end,
            items=not args.no_items,
            quiet=args.quiet,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if not args.quiet:
        print(
            f"wrote {summary['customer_rows']:,} customers, {summary['order_rows']:,} orders, "
            f"{summary['order_items']:,} order lines, {summary['redemptions']:,} redemptions, "
            f"{summary['survey_responses']:,} survey responses to {summary['out_dir']} "
            f"in {summary['elapsed_seconds']:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
