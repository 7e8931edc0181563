"""The raw-data contract for Parquet files: they load like CSV, scalar types become deterministic
text, nested or binary contract columns and unreadable files stop."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from customer_warehouse.ingestion import load_raw

from .conftest import FIXTURES
from .raw_load_helpers import ORDER_HEADER, _count, _load, _raw_dir, _rows, _stop

# --------------------------------------------------------------------------------------------
# Parquet
# --------------------------------------------------------------------------------------------


def test_parquet_loads_like_csv(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    source = FIXTURES / "minimal" / "orders.csv"
    with duckdb.connect() as con:
        con.execute(
            f"copy (select order_id, customer_id, cast(ordered_at as varchar) as ordered_at, "
            f"cast(amount as double) as amount from read_csv('{source}', all_varchar = true)) "
            f"to '{raw / 'orders.parquet'}' (format parquet)"
        )
    _load(raw, tmp_path / "p.duckdb")
    _load(FIXTURES / "minimal", tmp_path / "c.duckdb")
    assert _count(tmp_path / "p.duckdb", "orders") == _count(tmp_path / "c.duckdb", "orders")
    assert _rows(tmp_path / "p.duckdb", "orders", "_source_row, _load_error, _raw_line")[-1] == (
        6,
        None,
        None,
    )


def test_parquet_scalar_types_become_deterministic_text(tmp_path):
    shanghai = dt.timezone(dt.timedelta(hours=8))
    table = pa.table(
        {
            "order_id": pa.array([1, 2**40], pa.int64()),
            "customer_id": pa.array([7, 8], pa.int32()),
            "ordered_at": pa.array(
                [dt.datetime(2025, 3, 1, 9, 30), dt.datetime(2025, 3, 1, 9, 30, 0, 120)],
                pa.timestamp("us"),
            ),
            "status_changed_at": pa.array(
                [dt.datetime(2025, 3, 1, 9, 30, tzinfo=shanghai), None], pa.timestamp("ms", "UTC")
            ),
            "amount": pa.array([0.1, 1e20], pa.float64()),
            "discount_amount": pa.array([Decimal("12.50"), None], pa.decimal128(10, 2)),
            "currency": pa.array(["CNY", "USD"]).dictionary_encode(),
            "channel": pa.array([True, False]),
            "status": pa.array([dt.date(2025, 3, 1), None], pa.date32()),
            "notes": pa.array([[1, 2], []]),  # nested, but not a contract column: ignored
        }
    )
    raw = tmp_path / "raw"
    raw.mkdir()
    pq.write_table(table, raw / "orders.parquet")
    with duckdb.connect(str(tmp_path / "tz.duckdb")) as con:
        # the session time zone must not leak into the text
        con.execute("set TimeZone = 'America/New_York'")
        results = load_raw(con, raw, log=lambda _line: None, encodings={})
        rows = con.execute(
            "select order_id, customer_id, ordered_at, status_changed_at, amount, "
            "discount_amount, currency, channel, status from raw.orders order by _source_row"
        ).fetchall()
    assert results[0].ignored_columns == ["notes"]
    assert rows == [
        (
            "1",
            "7",
            "2025-03-01 09:30:00",
            "2025-03-01 01:30:00+00:00",
            "0.1",
            "12.50",
            "CNY",
            "true",
            "2025-03-01",
        ),
        (
            "1099511627776",
            "8",
            "2025-03-01 09:30:00.000120",
            None,
            "1e+20",
            None,
            "USD",
            "false",
            None,
        ),
    ]
    assert float(rows[1][4]) == 1e20 and float(rows[0][4]) == 0.1  # doubles round-trip


@pytest.mark.parametrize(
    ("column", "array", "shown"),
    [
        ("amount", pa.array([[1.0, 2.0]]), "LIST"),
        ("customer_id", pa.array([{"id": 1}]), "STRUCT"),
        ("order_id", pa.array([b"\x00\x01"], pa.binary()), "BLOB"),
    ],
    ids=["list", "struct", "blob"],
)
def test_parquet_nested_or_binary_contract_column_stops(tmp_path, column, array, shown):
    columns = {c: pa.array(["x"]) for c in ORDER_HEADER.split(",")}
    columns[column] = array
    raw = tmp_path / "raw"
    raw.mkdir()
    pq.write_table(pa.table(columns), raw / "orders.parquet")
    message = _stop(raw, tmp_path)
    assert f"orders.parquet: column {column} has the type {shown}" in message
    assert "Fix: re-export" in message


def test_parquet_with_a_file_row_number_column_is_numbered_by_position(tmp_path):
    columns = {c: pa.array(["b", "a"]) for c in ORDER_HEADER.split(",")}
    columns["file_row_number"] = pa.array([7, 3])
    raw = tmp_path / "raw"
    raw.mkdir()
    pq.write_table(pa.table(columns), raw / "orders.parquet")
    results = _load(raw, tmp_path / "w.duckdb")
    assert results[0].ignored_columns == ["file_row_number"]
    assert _rows(tmp_path / "w.duckdb", "orders", "_source_row, order_id") == [(1, "b"), (2, "a")]


def test_unreadable_parquet_stops(tmp_path):
    raw = _raw_dir(tmp_path, orders_parquet=b"PAR1 this is not parquet")
    assert "orders.parquet: not a readable Parquet file" in _stop(raw, tmp_path)
