"""The raw-data contract: what loads, and that a failure changes nothing.

Delimiters and encodings are in tests/test_raw_load_delimiters_and_encodings.py, malformed
rows and whole-file problems in tests/test_raw_load_malformed.py, Parquet in
tests/test_raw_load_parquet.py. Odd files are written byte by byte in tmp_path (BOM, GB18030,
CRLF, ragged rows, broken quotes, a 5 MB field). What the loader reads is compared with what
Python's csv module reads from the same text: every data record is exactly one raw row, good
(values equal) or malformed (`_load_error`, `_raw_line`).
"""

from __future__ import annotations

import shutil

import duckdb
import pytest

from customer_warehouse import config, ingestion
from customer_warehouse.ingestion import LOAD_COLUMNS, SOURCES

from .conftest import FIXTURES
from .raw_load_helpers import _count, _load, _rows, _stop

# --------------------------------------------------------------------------------------------
# The contract's shape
# --------------------------------------------------------------------------------------------


def test_minimum_is_orders_only(tmp_path):
    results = _load(FIXTURES / "minimal", tmp_path / "w.duckdb")
    by_source = {r.source: r for r in results}
    assert by_source["orders"].rows == 6
    for spec in SOURCES:
        if spec.name != "orders":
            assert by_source[spec.name].file is None
            assert _count(tmp_path / "w.duckdb", spec.name) == 0
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        for spec in SOURCES:
            described = con.execute(f"describe raw.{spec.name}").fetchall()
            # Optional columns exist (empty) so staging always sees the whole contract; the
            # load columns are there even for absent files.
            assert [r[0] for r in described] == [*spec.columns, *LOAD_COLUMNS]
            types = {r[0]: r[1] for r in described}
            assert types.pop("_source_row") == "BIGINT"
            assert set(types.values()) == {"VARCHAR"}
        good = con.execute(
            "select count(*) from raw.orders where _load_error is null and _raw_line is null"
        ).fetchone()[0]
    assert good == 6


def test_raw_source_names_in_config_match_the_contract():
    assert tuple(spec.name for spec in SOURCES) == config.RAW_SOURCE_NAMES


def test_rows_keep_their_file_position_and_raw_text(tmp_path):
    _load(FIXTURES / "quarantine", tmp_path / "w.duckdb")
    rows = _rows(tmp_path / "w.duckdb", "orders", "_source_row, order_id, amount")
    assert rows[0] == (1, "Q01", "100.00")
    assert (12, "Q09", "12,5x") in rows  # the bad value travels as text to staging


def test_extra_columns_are_reported_not_loaded(tmp_path):
    results = _load(FIXTURES / "quarantine", tmp_path / "w.duckdb")
    orders = next(r for r in results if r.source == "orders")
    assert orders.ignored_columns == ["expected_reason"]
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        manifest = con.execute(
            "select ignored_columns, encoding, delimiter, malformed_rows from raw.load_manifest "
            "where source = 'orders'"
        ).fetchone()
    assert manifest == ("expected_reason", "UTF-8", ",", 0)


def test_reload_is_idempotent(tmp_path):
    db = tmp_path / "w.duckdb"
    _load(FIXTURES / "quarantine", db)
    first = _rows(db, "orders")
    _load(FIXTURES / "quarantine", db)
    assert _rows(db, "orders") == first


# --------------------------------------------------------------------------------------------
# A stop changes nothing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "broken",
    [
        {"customers_csv": b'customer_id,email\nc1,a@x\nc2,"b@x\nc3,c@x\n'},
        {"customers_csv": b""},
        {"customers_csv": b"customer_id,email\nc1,\xff\xfe\n"},
        {"customers_csv": b"email\nx\n"},
    ],
    ids=["unclosed-quote", "empty", "undecodable", "missing-column"],
)
def test_a_broken_file_leaves_the_previous_load_intact(tmp_path, broken):
    db = tmp_path / "w.duckdb"
    raw = tmp_path / "raw"
    shutil.copytree(FIXTURES / "quarantine", raw)
    _load(raw, db)
    before = {spec.name: _rows(db, spec.name) for spec in SOURCES}
    # customers breaks *after* orders would have been replaced: nothing may change.
    (raw / "orders.csv").write_bytes((FIXTURES / "minimal" / "orders.csv").read_bytes())
    for name, data in broken.items():
        (raw / name.replace("_csv", ".csv")).write_bytes(data)
    message = _stop(raw, tmp_path)
    assert "customers.csv" in message
    assert {spec.name: _rows(db, spec.name) for spec in SOURCES} == before


def test_cli_reports_config_errors_without_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CW_WAREHOUSE_PATH", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("CW_RAW_DIR", str(tmp_path / "nowhere"))
    assert ingestion.main([]) == 2
    assert "CW_RAW_DIR" in capsys.readouterr().err
    monkeypatch.setenv("CW_RAW_DIR", str(tmp_path))
    monkeypatch.setenv("CW_RAW_ENCODING", "klingon")
    assert ingestion.main([]) == 2
    assert "CW_RAW_ENCODING='klingon'" in capsys.readouterr().err
