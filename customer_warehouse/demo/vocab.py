"""The words and rule values the demo writes, read once at import.

Two sources: the demo's own vocabularies in ``customer_warehouse/demo/data/`` (names, provinces
and cities, products, survey comments, and the mix in which the demo uses them) and the dbt
seeds in ``seeds/`` for every value the warehouse itself classifies by (canonical channels and
statuses, currency rates, adjustment reasons, NPS categories). A demo file that names a value
the seeds do not know is an error here, not a surprise in staging.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal
from importlib import resources

import numpy as np

from customer_warehouse.config import PROJECT_DIR

SEEDS_DIR = PROJECT_DIR / "seeds"


def data_rows(name: str) -> list[dict[str, str]]:
    """The rows of a demo data file (``customer_warehouse/demo/data/<name>``)."""
    text = resources.files(__package__).joinpath("data").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def seed_rows(name: str) -> list[dict[str, str]]:
    """The rows of a dbt seed (``seeds/<name>``); the generator needs the project checkout."""
    path = SEEDS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the demo generator reads the dbt seeds of the project checkout."
        )
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _distinct(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _known(values: tuple[str, ...], seed: str, column: str) -> tuple[str, ...]:
    """``values`` after checking that each is a value of ``column`` in ``seeds/<seed>``."""
    unknown = set(values) - {row[column] for row in seed_rows(seed)}
    if unknown:
        raise ValueError(f"demo values {sorted(unknown)} are not in seeds/{seed} ({column}).")
    return values


def _weights(name: str, key: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
    rows = data_rows(name)
    return tuple(row[key] for row in rows), tuple(float(row["weight"]) for row in rows)


# Rule values of the seeds.
#: Canonical statuses (completed first: code 0 is a purchase, 1 cancelled, 2 refunded).
STATUSES = _distinct([row["status"] for row in seed_rows("order_status_aliases.csv")])
if len(STATUSES) != 3:
    raise ValueError("the demo writes three canonical statuses (seeds/order_status_aliases.csv).")
#: Canonical channels, in seed order, with the demo's mix.
CHANNELS = _distinct([row["channel"] for row in seed_rows("channel_aliases.csv")])
_CHANNEL_MIX = {row["channel"]: float(row["weight"]) for row in data_rows("order_channels.csv")}
if set(_CHANNEL_MIX) != set(CHANNELS):
    raise ValueError("demo/data/order_channels.csv must weigh every channel of the seed.")
CHANNEL_WEIGHTS = tuple(_CHANNEL_MIX[channel] for channel in CHANNELS)
#: The currencies the demo's customers pay in (the first is the reporting currency) and their
#: rates to it from seeds/currency_rates.csv, in cents of the reporting currency per unit.
CURRENCIES = _known(
    tuple(row["currency"] for row in data_rows("payment_currencies.csv")),
    "currency_rates.csv",
    "currency",
)
_RATES = {
    row["currency"]: Decimal(row["rate_to_reporting"]) for row in seed_rows("currency_rates.csv")
}
if any(_RATES[c] * 100 % 1 for c in CURRENCIES):
    raise ValueError("the demo converts with rates of at most two decimals (currency_rates.csv).")
RATE_X100 = np.array([int(_RATES[c] * 100) for c in CURRENCIES], dtype=np.int64)
#: NPS categories from the lowest score up: (name, lowest score).
NPS_CATEGORIES = tuple(
    sorted(
        (
            (row["nps_category"], int(row["min_score"]))
            for row in seed_rows("tiers/nps_categories.csv")
        ),
        key=lambda item: item[1],
    )
)

# The demo's own vocabularies.
ADJUSTMENT_REASONS, ADJUSTMENT_REASON_WEIGHTS = _weights("adjustment_reasons.csv", "reason")
_known(ADJUSTMENT_REASONS, "point_adjustment_reasons.csv", "reason")
ACQUISITION_CHANNELS, ACQUISITION_WEIGHTS = _weights(
    "acquisition_channels.csv", "acquisition_channel"
)
CATEGORIES, CATEGORY_WEIGHTS = _weights("categories.csv", "category")
OUTERWEAR = CATEGORIES.index("outerwear")
#: Per category: the adjectives and nouns of its product names.
PRODUCT_WORDS = {
    row["category"]: (tuple(row["adjectives"].split("|")), tuple(row["nouns"].split("|")))
    for row in data_rows("categories.csv")
}

_NEED_TAG_ROWS = data_rows("need_tags.csv")
NEED_TAGS = _known(
    tuple(row["need_tag"] for row in _NEED_TAG_ROWS), "tiers/needs_segments.csv", "need_tag"
)
#: Share of respondents naming each tag, and its change for spend above the mean.
NEED_TAG_SHARES = tuple(
    (float(row["share"]), float(row["share_change_above_median_spend"])) for row in _NEED_TAG_ROWS
)
#: Survey comments per NPS category (the same number for each: one draw picks the k-th).
COMMENTS: dict[str, tuple[str, ...]] = {}
for _row in data_rows("survey_comments.csv"):
    COMMENTS.setdefault(_row["nps_category"], ())
    COMMENTS[_row["nps_category"]] += (_row["comment"],)
if set(COMMENTS) != {name for name, _lowest in NPS_CATEGORIES}:
    raise ValueError("demo/data/survey_comments.csv must have comments for every NPS category.")
COMMENTS_PER_CATEGORY = min(len(comments) for comments in COMMENTS.values())

SURNAMES = tuple((row["surname"], float(row["weight"])) for row in data_rows("surnames.csv"))
_GIVEN = data_rows("given_names.csv")
GIVEN_NAMES_F = tuple(row["given_name"] for row in _GIVEN if row["gender"] == "F")
GIVEN_NAMES_M = tuple(row["given_name"] for row in _GIVEN if row["gender"] == "M")

#: Mainland provinces / municipalities / autonomous regions: English name, population
#: (millions, 2020 census, rounded), cold winters (north of the Qinling-Huaihe line or high
#: plateau), and 1-3 major cities with their share of the province's customers.
_CITIES: dict[str, list[tuple[str, float]]] = {}
for _row in data_rows("cities.csv"):
    _CITIES.setdefault(_row["province"], []).append(
        (_row["city"], float(_row["share_of_province"]))
    )
PROVINCES: tuple[tuple[str, float, bool, tuple[tuple[str, float], ...]], ...] = tuple(
    (
        row["province"],
        float(row["population_millions"]),
        row["cold_winters"] == "true",
        tuple(_CITIES[row["province"]]),
    )
    for row in data_rows("provinces.csv")
)
_known(tuple(row[0] for row in PROVINCES), "region_mapping.csv", "province")

#: Spring Festival (Chinese New Year) dates; other years fall back to February 5.
SPRING_FESTIVAL: dict[int, tuple[int, int]] = {}
for _row in data_rows("spring_festival.csv"):
    _day = dt.date.fromisoformat(_row["date"])
    SPRING_FESTIVAL[int(_row["year"])] = (_day.month, _day.day)
