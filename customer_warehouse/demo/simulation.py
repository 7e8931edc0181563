"""The simulation: customers, buyers and their orders, the ground truth of the demo.

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
decimals in the order's currency (CNY; some USD and HKD at the rates of
``seeds/currency_rates.csv``, converted so the CNY value is the Gamma-Gamma value up to
rounding). ``amount`` is what the customer paid;
``discount_amount`` is the discount given on top of it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from customer_warehouse.demo.draws import (
    day_between,
    sample_days,
    segment_starts,
    sort_by_time,
    timestamp_styles,
    utc_on_days,
    weighted,
)
from customer_warehouse.demo.params import (
    EPOCH,
    LOCAL_OFFSET_SECONDS,
    ORDER_ID_BASE,
    BgNbdParams,
    GammaGammaParams,
    Shares,
)
from customer_warehouse.demo.vocab import (
    ACQUISITION_CHANNELS,
    ACQUISITION_WEIGHTS,
    CATEGORY_WEIGHTS,
    CHANNEL_WEIGHTS,
    CHANNELS,
    PROVINCES,
    RATE_X100,
)


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


@dataclass
class Customers:
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
class Buyers:
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
class Orders:
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
class Completed:
    """Completed orders in customer-major order (by buyer, then day): loyalty points."""

    buyer: np.ndarray
    day: np.ndarray
    points: np.ndarray


@dataclass(frozen=True)
class Window:
    """The simulated period in the units the stages use."""

    start: dt.date
    end: dt.date
    n_days: int
    start_epoch_day: int
    cap_utc: int  # the last second of the window: end 23:59:59 +08:00

    @classmethod
    def of(cls, start: dt.date, end: dt.date) -> Window:
        n_days = (end - start).days + 1
        start_epoch_day = (start - EPOCH).days
        end_epoch_day = start_epoch_day + n_days - 1
        cap_utc = (end_epoch_day + 1) * 86400 - LOCAL_OFFSET_SECONDS - 1
        return cls(start, end, n_days, start_epoch_day, cap_utc)


@dataclass
class World:
    """What the simulation made, with the counts of the order simulation (the stages that
    write files read it)."""

    people: Customers
    buyers: Buyers
    orders: Orders
    completed: Completed
    counts: dict[str, Any]


def city_table() -> tuple[list[str], np.ndarray, np.ndarray]:
    names: list[str] = []
    province_of: list[int] = []
    share: list[float] = []
    for index, (_name, _population, _cold, cities) in enumerate(PROVINCES):
        for city, city_share in cities:
            names.append(city)
            province_of.append(index)
            share.append(city_share)
    return names, np.array(province_of), np.array(share)


def simulate_customers(rng: np.random.Generator, n: int, shares: Shares) -> Customers:
    population = np.array([row[1] for row in PROVINCES])
    province = weighted(rng, population, n)
    _names, province_of, city_share = city_table()
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
    acquisition = weighted(rng, ACQUISITION_WEIGHTS, n)
    preferred = weighted(rng, CHANNEL_WEIGHTS, n)
    store_acquired = acquisition == ACQUISITION_CHANNELS.index("store")
    preferred = np.where(store_acquired & (rng.random(n) < 0.6), CHANNELS.index("store"), preferred)
    foreign = np.where(
        rng.random(n) < shares.foreign_currency_customers,
        np.where(rng.random(n) < 0.4, 1, 2),
        0,
    )
    return Customers(
        n=n,
        is_buyer=rng.random(n) >= shares.prospects,
        province=province,
        city=city,
        cold=cold,
        gender=weighted(rng, (0.52, 0.45, 0.03), n),
        acquisition=acquisition,
        preferred_channel=preferred,
        omni=rng.random(n) < shares.omni_channel,
        favorite_category=weighted(rng, CATEGORY_WEIGHTS, n),
        discount_propensity=rng.beta(0.7, 5.0, n),
        foreign_currency=foreign,
    )


def simulate_buyers(
    rng: np.random.Generator,
    customers: Customers,
    day_weights: np.ndarray,
    bg: BgNbdParams,
    gg: GammaGammaParams,
) -> Buyers:
    index = np.flatnonzero(customers.is_buyer)
    nb = len(index)
    n_days = len(day_weights)
    t0 = sample_days(rng, day_weights, nb)
    T = n_days - t0
    lam = rng.gamma(bg.r, 1.0 / bg.alpha, nb)
    p = rng.beta(bg.a, bg.b, nb)
    nu = rng.gamma(gg.q, 1.0 / gg.v, nb)
    draw = simulate_bg_nbd(rng, lam, p, T)
    return Buyers(index, t0, T, lam, p, nu, draw, *_purchase_days(t0, draw))


def _occasion_times(t0: np.ndarray, draw: BgNbdDraw) -> tuple[np.ndarray, np.ndarray]:
    """Buyer index and continuous time of every purchase occasion, customer-major."""
    counts = draw.repeat_purchases + 1
    owner = np.repeat(np.arange(len(t0)), counts)
    times = t0[owner]
    is_repeat = np.ones(len(owner), dtype=bool)
    is_repeat[segment_starts(counts)] = False
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
    starts = segment_starts(counts)
    new_day = np.ones(len(day), dtype=np.int64)
    new_day[1:] = day[1:] != day[:-1]
    new_day[starts] = 1
    return day[starts], day[starts + counts - 1], np.add.reduceat(new_day, starts) - 1


def build_orders(
    rng: np.random.Generator,
    customers: Customers,
    buyers: Buyers,
    gg: GammaGammaParams,
    shares: Shares,
    start_epoch_day: int,
    cap_utc: int,
) -> tuple[Orders, Completed, dict[str, int]]:
    """Every order of the buyers (completed, then cancelled and refunded ones), in time order,
    the completed orders customer-major for the loyalty truth, and the counts of the kinds."""
    order_owner, order_day, cny, counts = _completed_orders(rng, buyers, gg, shares)
    n_completed = len(order_owner)
    n_cancelled = int(rng.binomial(n_completed, shares.cancelled))
    n_refunded = int(rng.binomial(n_completed, shares.refunded))
    # Cancelled and refunded orders: extra orders of buyers (chosen in proportion to their
    # purchases) on a day between their first and last purchase day.
    n_extra = n_cancelled + n_refunded
    extra_owner = order_owner[rng.integers(0, n_completed, n_extra)]
    extra_day = day_between(rng, buyers.first_day[extra_owner], buyers.last_day[extra_owner])
    extra_cny = _occasion_cents(rng, gg, buyers.nu[extra_owner])
    status = np.zeros(n_completed + n_extra, np.int8)
    status[n_completed : n_completed + n_cancelled] = 1
    status[n_completed + n_cancelled :] = 2
    customer = buyers.index[np.concatenate([order_owner, extra_owner])].astype(np.int32)
    n_orders = len(customer)
    utc = utc_on_days(rng, start_epoch_day, np.concatenate([order_day, extra_day]))
    # Customers who pay in a foreign currency do so for about half of their orders.
    currency = customers.foreign_currency[customer] * (rng.random(n_orders) < 0.5)
    currency = currency.astype(np.int8)
    cents = np.concatenate([cny, extra_cny]) * 100
    cents = np.maximum(1, np.rint(cents / RATE_X100[currency])).astype(np.int64)
    del extra_owner, extra_day, extra_cny, cny

    # Loyalty points of completed orders (customer-major), rounded down per order.
    completed = Completed(
        buyer=order_owner,
        day=order_day,
        points=cents[:n_completed] * RATE_X100[currency[:n_completed]] // 10_000,
    )
    # Export order: by time. The sort key carries the row index, so it is unique and any sort
    # algorithm gives the same (reproducible) order.
    order, utc = sort_by_time(utc)
    orders = _export_orders(
        rng, customers, shares, customer[order], utc, cents[order], currency[order],
        status[order], cap_utc,
    )  # fmt: skip
    counts |= {
        "completed_orders": int(n_completed),
        "cancelled_orders": int(n_cancelled),
        "refunded_orders": int(n_refunded),
    }
    return orders, completed, counts


def _occasion_cents(rng: np.random.Generator, gg: GammaGammaParams, nu: np.ndarray) -> np.ndarray:
    """Gamma-Gamma values of purchase occasions in CNY cents (at least one cent)."""
    return np.maximum(1, np.rint(rng.gamma(gg.p, 1.0 / nu) * 100)).astype(np.int64)


def _completed_orders(
    rng: np.random.Generator, buyers: Buyers, gg: GammaGammaParams, shares: Shares
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Buyer, day and CNY cents of every completed order, customer-major: one order per
    purchase occasion, two (the amount split) for a share of them."""
    owner, times = _occasion_times(buyers.t0, buyers.draw)
    n_occasions = len(owner)
    day = np.floor(times).astype(np.int64)
    del times
    value = _occasion_cents(rng, gg, buyers.nu[owner])
    split = (rng.random(n_occasions) < shares.split_occasions) & (value >= 2)
    per_occasion = 1 + split
    order_owner = np.repeat(owner, per_occasion)
    order_day = np.repeat(day, per_occasion)
    cny = np.repeat(value, per_occasion)
    first = segment_starts(per_occasion)[split]
    part = np.clip(np.rint(value[split] * rng.uniform(0.25, 0.75, len(first))), 1, None)
    part = np.minimum(part.astype(np.int64), value[split] - 1)
    cny[first] = part
    cny[first + 1] = value[split] - part
    counts = {"purchase_occasions": int(n_occasions), "split_occasions": int(split.sum())}
    return order_owner, order_day, cny, counts


def _export_orders(
    rng: np.random.Generator,
    customers: Customers,
    shares: Shares,
    customer: np.ndarray,
    utc: np.ndarray,
    cents: np.ndarray,
    currency: np.ndarray,
    status: np.ndarray,
    cap_utc: int,
) -> Orders:
    """The orders in time order with what only the export shows: ids (with gaps), channel,
    discount, when the status changed and how timestamps are written."""
    n_orders = len(customer)
    ids = ORDER_ID_BASE + np.cumsum(rng.integers(1, 4, n_orders))
    omni = customers.omni[customer]
    channel = customers.preferred_channel[customer].astype(np.int8)
    channel[omni] = weighted(rng, CHANNEL_WEIGHTS, int(omni.sum()))
    discount = np.zeros(n_orders, dtype=np.int64)
    discounted = np.flatnonzero(rng.random(n_orders) < customers.discount_propensity[customer])
    discount[discounted] = np.rint(cents[discounted] * rng.uniform(0.05, 0.3, len(discounted)))
    changed = np.full(n_orders, -1, dtype=np.int64)
    for code, low, high in ((1, 0, 2 * 86400), (2, 86400, 30 * 86400)):
        rows = np.flatnonzero(status == code)
        delay = rng.integers(low, high + 1, len(rows))
        changed[rows] = np.minimum(utc[rows] + delay, cap_utc)
    return Orders(
        id=ids,
        customer=customer,
        utc=utc,
        style=timestamp_styles(rng, shares, n_orders),
        cents=cents,
        currency=currency,
        channel=channel,
        status=status,
        changed_utc=changed,
        discount_cents=discount,
    )


def assign_signups(
    rng: np.random.Generator,
    customers: Customers,
    orders: Orders,
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
    prospect_day = weighted(rng, day_weights, n_prospects)
    signup[~buyer] = utc_on_days(rng, start_epoch_day, prospect_day)
    customers.signup = signup
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(signup, kind="stable")] = np.arange(n)
    customers.number = rank + 1
