"""Random draws the simulation shares: counter-based bits, weighted categories, days and
times of day, timestamp styles."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np

from customer_warehouse.demo.params import Shares
from customer_warehouse.demo.vocab import SPRING_FESTIVAL


def hash64(keys: np.ndarray, stream: int, seed: int) -> np.ndarray:
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


def unit_interval(bits: np.ndarray, field: int) -> np.ndarray:
    """The 16-bit field ``field`` (0-3) of 64 random bits as a uniform number in [0, 1)."""
    return ((bits >> np.uint64(16 * field)) & np.uint64(0xFFFF)).astype(np.float64) / 65536.0


def weighted(rng: np.random.Generator, weights: Sequence[float], size: int) -> np.ndarray:
    """Category indices drawn with the given relative weights. Few categories: a 65,536-slot
    lookup table (weights resolved to 1/65,536, much faster than a search per draw)."""
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64))
    cumulative /= cumulative[-1]
    if len(cumulative) <= 64:
        slots = (np.arange(1 << 16) + 0.5) / (1 << 16)
        table = np.minimum(np.searchsorted(cumulative, slots, side="right"), len(cumulative) - 1)
        return table.astype(np.int64)[rng.integers(0, 1 << 16, size)]
    return np.minimum(np.searchsorted(cumulative, rng.random(size), side="right"), len(weights) - 1)


def segment_starts(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) - counts


def time_of_day(rng: np.random.Generator, size: int) -> np.ndarray:
    """Seconds after UTC midnight of a purchase between 08:00 and 23:59:59 China time, with a
    lunch and an evening peak."""
    local_hour_weights = (2, 3, 4, 5, 6, 5, 4, 4, 4, 5, 6, 8, 9, 8, 6, 3)  # 08:00 .. 23:00
    hour = weighted(rng, local_hour_weights, size)
    return hour * 3600 + rng.integers(0, 3600, size)


def utc_on_days(rng: np.random.Generator, start_epoch_day: int, days: np.ndarray) -> np.ndarray:
    """UTC epoch seconds of purchases on the given days of the window (0 = its first day), at a
    time of day drawn by :func:`time_of_day`."""
    return (start_epoch_day + days) * 86400 + time_of_day(rng, len(days))


def day_between(rng: np.random.Generator, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """A uniformly drawn day from ``first`` to ``last`` (both included), per element."""
    span = last - first + 1
    return first + (rng.random(len(first)) * span).astype(np.int64)


def acquisition_day_weights(start: dt.date, n_days: int) -> np.ndarray:
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


def sample_days(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    """Continuous day positions (day index + fraction) drawn with the given day weights."""
    day = weighted(rng, weights, size)
    return day + rng.random(size)


def sort_by_time(utc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def timestamp_styles(rng: np.random.Generator, shares: Shares, size: int) -> np.ndarray:
    """0 = local time with +08:00, 1 = UTC with Z, 2 = UTC without offset."""
    u = rng.random(size)
    return (u >= shares.local_offset).astype(np.int8) + (u >= shares.local_offset + shares.utc_z)
