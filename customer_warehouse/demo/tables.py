"""The clean rows of ``customers``, ``orders``, ``order_items`` and ``products`` as Arrow
tables of strings, in the raw-data contract's columns.

``order_items`` has 1-4 lines per order summing to the amount to the cent (category affinity per
customer, outerwear in winter for provinces with cold winters); ``products`` has 300 products.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from customer_warehouse.demo.draws import (
    hash64,
    segment_starts,
    timestamp_styles,
    unit_interval,
    weighted,
)
from customer_warehouse.demo.params import PRODUCTS_PER_CATEGORY, Shares
from customer_warehouse.demo.simulation import Customers, Orders, city_table
from customer_warehouse.demo.text import (
    digits,
    format_dates,
    format_money,
    format_timestamps,
    null_where,
    take,
)
from customer_warehouse.demo.vocab import (
    ACQUISITION_CHANNELS,
    CATEGORIES,
    CATEGORY_WEIGHTS,
    CHANNELS,
    CURRENCIES,
    GIVEN_NAMES_F,
    GIVEN_NAMES_M,
    OUTERWEAR,
    PRODUCT_WORDS,
    PROVINCES,
    STATUSES,
    SURNAMES,
)


def orders_table(orders: Orders, rows: np.ndarray) -> pa.Table:
    status = orders.status[rows]
    return pa.table(
        {
            "order_id": digits(orders.id[rows], 9, "O"),
            "customer_id": digits(orders.customer_number[rows], 7, "C"),
            "ordered_at": format_timestamps(orders.utc[rows], orders.style[rows]),
            "amount": format_money(orders.cents[rows]),
            "currency": take(CURRENCIES, orders.currency[rows]),
            "channel": take(CHANNELS, orders.channel[rows]),
            "status": take(STATUSES, status),
            "status_changed_at": format_timestamps(
                orders.changed_utc[rows], orders.style[rows], valid=status != 0
            ),
            "discount_amount": format_money(orders.discount_cents[rows]),
        }
    )


def empty_table(columns: Sequence[str]) -> pa.Table:
    return pa.table({name: pa.array([], pa.string()) for name in columns})


def _province_variants() -> pa.Array:
    """Per province: the clean name then messy spellings (case, surrounding spaces)."""
    variants = []
    for name, *_rest in PROVINCES:
        variants += [name, f" {name.lower()} ", name.upper(), name.lower(), f"{name} "]
    return pa.array(variants)


def customers_table(rng: np.random.Generator, customers: Customers, shares: Shares) -> pa.Table:
    """Rows in customer-id (sign-up) order; ages 18-80 at sign-up."""
    n = customers.n
    order = np.argsort(customers.number)
    number = customers.number[order]
    signup = customers.signup[order]
    gender = customers.gender[order]
    style = timestamp_styles(rng, shares, n)
    age_years = np.clip(18 + rng.gamma(3.0, 5.5, n), 18, 79.9)
    birth_day = signup // 86400 - (age_years * 365.25).astype(np.int64)
    birth = null_where(format_dates(birth_day), rng.random(n) < shares.missing_birth_date)
    variant = np.where(rng.random(n) < shares.messy_province, rng.integers(1, 5, n), 0)
    province = take(_province_variants(), customers.province[order] * 5 + variant)
    city_names, _province_of, _share = city_table()
    surname = weighted(rng, [w for _s, w in SURNAMES], n)
    given_f = rng.integers(0, len(GIVEN_NAMES_F), n)
    given_m = rng.integers(0, len(GIVEN_NAMES_M), n)
    given = pc.if_else(
        pa.array(gender == 1), take(GIVEN_NAMES_M, given_m), take(GIVEN_NAMES_F, given_f)
    )
    surname_text = take([s for s, _w in SURNAMES], surname)
    full_name = pc.binary_join_element_wise(surname_text, given, " ")
    given_lower = pc.if_else(
        pa.array(gender == 1),
        take([g.lower() for g in GIVEN_NAMES_M], given_m),
        take([g.lower() for g in GIVEN_NAMES_F], given_f),
    )
    email = pc.binary_join_element_wise(
        given_lower,
        ".",
        take([s.lower() for s, _w in SURNAMES], surname),
        pc.cast(pa.array(number), pa.string()),
        "@example.com",
        "",
    )
    # +86 100 xxxx xxxx: 100 is not a mobile prefix, so no real number is ever produced;
    # multiplying by a number coprime to 10^8 keeps them unique.
    scrambled = (number * 7_919 + 1_234_567) % 100_000_000
    phone = pc.binary_join_element_wise(
        digits(scrambled // 10_000, 4, "+86 100 "), digits(scrambled % 10_000, 4), " "
    )
    gender_text = null_where(take(("F", "M", ""), gender), gender == 2)
    return pa.table(
        {
            "customer_id": digits(number, 7, "C"),
            "signed_up_at": format_timestamps(signup, style),
            "birth_date": birth,
            "gender": gender_text,
            "country": take(("CN",), np.zeros(n, dtype=np.int64)),
            "province": province,
            "city": take(city_names, customers.city[order]),
            "email": email,
            "phone": phone,
            "full_name": full_name,
            "acquisition_channel": take(ACQUISITION_CHANNELS, customers.acquisition[order]),
            "marketing_consent": take(
                ("false", "true"), (rng.random(n) < shares.marketing_consent).astype(np.int64)
            ),
        }
    )


def products_table() -> pa.Table:
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


def items_table(
    orders: Orders, customers: Customers, rows: np.ndarray, order_ids: pa.Array, seed: int
) -> pa.Table:
    """1-4 lines per order whose quantity x unit_price sums to the amount to the cent.

    Random numbers are keyed by the order's position, so the lines of an order do not depend
    on how the orders are chunked."""
    key = rows.astype(np.uint64)
    cents = orders.cents[rows]
    u = unit_interval(hash64(key, 1, seed), 0)
    lines = 1 + (u >= 0.45).astype(np.int64) + (u >= 0.75) + (u >= 0.90)
    lines = np.where(cents < 500, 1, np.where(cents < 2000, np.minimum(lines, 2), lines))
    starts = segment_starts(lines)
    line_order = np.repeat(np.arange(len(rows)), lines)
    line_no = np.arange(len(line_order)) - starts[line_order]
    is_last = line_no == lines[line_order] - 1
    bits = hash64(key[line_order] * np.uint64(8) + line_no.astype(np.uint64), 2, seed)
    uq = unit_interval(bits, 0)
    quantity = np.where(is_last, 1, 1 + (uq >= 0.8).astype(np.int64) + (uq >= 0.95))
    weight = 0.2 + 0.8 * unit_interval(bits, 1)
    share = cents[line_order] * weight / np.add.reduceat(weight, starts)[line_order]
    unit = np.maximum(1, np.floor(share / quantity)).astype(np.int64)
    allocated = np.add.reduceat(np.where(is_last, 0, unit * quantity), starts)
    unit = np.where(is_last, (cents - allocated)[line_order], unit)

    customer = orders.customer[rows][line_order]
    month = _month_of(orders.utc[rows] // 86400)[line_order]
    cumulative = np.cumsum(CATEGORY_WEIGHTS) / np.sum(CATEGORY_WEIGHTS)
    u_choice = unit_interval(bits, 2)
    base = np.minimum(
        np.searchsorted(cumulative, unit_interval(bits, 3), side="right"), len(CATEGORIES) - 1
    )
    base[_SUMMER[month] & (base == OUTERWEAR)] = CATEGORIES.index("apparel")
    category = np.where(
        u_choice < 0.4,
        customers.favorite_category[customer],
        np.where(customers.cold[customer] & _WINTER[month] & (u_choice < 0.65), OUTERWEAR, base),
    )
    popularity = unit_interval(hash64(bits, 3, seed), 0) ** 1.6
    product = category * PRODUCTS_PER_CATEGORY + (popularity * PRODUCTS_PER_CATEGORY).astype(
        np.int64
    )
    return pa.table(
        {
            "order_id": order_ids.take(pa.array(line_order)),
            "product_id": _product_ids().take(pa.array(product)),
            "quantity": take(("0", "1", "2", "3"), quantity),
            "unit_price": format_money(unit),
        }
    )


def _product_ids() -> pa.Array:
    return digits(10001 + np.arange(len(CATEGORIES) * PRODUCTS_PER_CATEGORY), 5, "P")
