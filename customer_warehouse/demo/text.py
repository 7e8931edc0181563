"""Columns of text built with numpy: ids, money, dates and ISO 8601 timestamps, without a
Python loop per row."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from customer_warehouse.demo.params import EPOCH, LOCAL_OFFSET_SECONDS, SUFFIXES


def _strings_from_matrix(buf: np.ndarray) -> pa.Array:
    """Fixed-width ASCII rows of a uint8 matrix → a string array, without a Python loop."""
    n, width = buf.shape
    data = pa.py_buffer(np.ascontiguousarray(buf))
    if (n + 1) * width < 2**31:
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), data)
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), data)


def digits(numbers: np.ndarray, width: int, prefix: str = "") -> pa.Array:
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
    text = "".join((EPOCH + dt.timedelta(days=day)).isoformat() for day in range(low, high + 1))
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8).reshape(-1, 10)


def _whole_number_table() -> pa.Array:
    """'0'..'99999' as strings (amounts above fall back to a cast)."""
    if "whole" not in _CACHE:
        _CACHE["whole"] = pc.cast(pa.array(np.arange(100_000)), pa.string())
        _CACHE["cents"] = pa.array([f"{i:02d}" for i in range(100)])
    return _CACHE["whole"]


def take(table: pa.Array | Sequence[str], index: np.ndarray) -> pa.Array:
    if not isinstance(table, pa.Array):
        table = pa.array(list(table), pa.string())
    return table.take(pa.array(np.asarray(index, dtype=np.int64)))


def format_money(cents: np.ndarray) -> pa.Array:
    """Non-negative cents → '123.45'."""
    cents = np.asarray(cents, dtype=np.int64)
    table = _whole_number_table()
    whole = cents // 100
    big = whole >= len(table)
    text = take(table, np.where(big, 0, whole))
    if big.any():
        text = pc.replace_with_mask(text, pa.array(big), pc.cast(pa.array(whole[big]), pa.string()))
    return pc.binary_join_element_wise(text, take(_CACHE["cents"], cents % 100), ".")


def format_dates(epoch_days: np.ndarray) -> pa.Array:
    """Days since 1970-01-01 → 'YYYY-MM-DD' via a lookup table of the days in range."""
    epoch_days = np.asarray(epoch_days, dtype=np.int64)
    if len(epoch_days) == 0:
        return pa.array([], pa.string())
    low, high = int(epoch_days.min()), int(epoch_days.max())
    table = pa.array([(EPOCH + dt.timedelta(days=day)).isoformat() for day in range(low, high + 1)])
    return take(table, epoch_days - low)


_SUFFIX_BYTES = np.zeros((3, 6), dtype=np.uint8)
for _row, _suffix in enumerate(SUFFIXES):
    _SUFFIX_BYTES[_row, : len(_suffix)] = np.frombuffer(_suffix.encode("ascii"), dtype=np.uint8)
_SUFFIX_LENGTHS = np.array([len(suffix) for suffix in SUFFIXES], dtype=np.int64)


def format_timestamps(
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


def null_where(values: pa.Array, mask: np.ndarray) -> pa.Array:
    if not mask.any():
        return values
    return pc.if_else(pa.array(mask), pa.scalar(None, values.type), values)
