"""The raw-data contract: what loads, what stops the run, and that a failure changes nothing."""

from __future__ import annotations

import shutil

import duckdb
import pytest

from customer_warehouse import raw_load
from customer_warehouse.raw_load import SOURCES, RawDataError, load_raw

from .conftest import FIXTURES


def _load(raw_dir, db_path):
    with duckdb.connect(str(db_path)) as con:
        return load_raw(con, raw_dir, log=lambda _line: None)


def _count(db_path, table):
    with duckdb.connect(str(db_path), read_only=True) as con:
        return con.execute(f"select count(*) from raw.{table}").fetchone()[0]


def test_minimum_is_orders_only(tmp_path):
    results = _load(FIXTURES / "minimal", tmp_path / "w.duckdb")
    by_source = {r.source: r for r in results}
    assert by_source["orders"].rows == 6
    for spec in SOURCES:
        if spec.name != "orders":
            assert by_source[spec.name].file is None
            assert _count(tmp_path / "w.duckdb", spec.name) == 0
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        columns = [r[0] for r in con.execute("describe raw.orders").fetchall()]
        types = {r[1] for r in con.execute("describe raw.orders").fetchall()}
    # Optional columns exist (empty) so staging always sees the whole contract.
    assert columns[: len(SOURCES[0].columns)] == list(SOURCES[0].columns)
    assert columns[-2:] == ["_source_file", "_source_row"]
    assert types <= {"VARCHAR", "BIGINT"}


def test_rows_keep_their_file_position_and_raw_text(tmp_path):
    _load(FIXTURES / "quarantine", tmp_path / "w.duckdb")
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        rows = con.execute(
            "select _source_row, order_id, amount from raw.orders order by _source_row"
        ).fetchall()
    assert rows[0] == (1, "Q01", "100.00")
    assert (12, "Q09", "12,5x") in rows  # the bad value travels as text to staging


def test_extra_columns_are_reported_not_loaded(tmp_path):
    results = _load(FIXTURES / "quarantine", tmp_path / "w.duckdb")
    orders = next(r for r in results if r.source == "orders")
    assert orders.ignored_columns == ["expected_reason"]
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        manifest = con.execute(
            "select ignored_columns from raw.load_manifest where source = 'orders'"
        ).fetchone()[0]
    assert manifest == "expected_reason"


def test_reload_is_idempotent(tmp_path):
    db = tmp_path / "w.duckdb"
    _load(FIXTURES / "quarantine", db)
    first = duckdb.connect(str(db)).execute("select * from raw.orders order by 1, 2").fetchall()
    _load(FIXTURES / "quarantine", db)
    second = duckdb.connect(str(db)).execute("select * from raw.orders order by 1, 2").fetchall()
    assert first == second


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


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))


@pytest.mark.parametrize(
    ("content", "encoding", "expected"),
    [
        (
            "order_id,customer_id,amount\n1,c1,10\n",
            "utf-8",
            "missing required column(s) ordered_at",
        ),
        (
            "order_id;customer_id;ordered_at;amount\n1;c1;2025-01-01;10\n",
            "utf-8",
            "semicolon-delimited",
        ),
        ("order_id,customer_id,ordered_at,amount\n1,张三,2025-01-01,10\n", "gbk", "not UTF-8"),
        (
            "order_id,customer_id,ordered_at,amount\n1,c1,2025-01-01,10,extra,fields\n",
            "utf-8",
            "could not be read",
        ),
        ("order_id,order_id,customer_id,ordered_at,amount\n", "utf-8", "more than once"),
    ],
    ids=["missing-column", "wrong-delimiter", "not-utf8", "ragged-row", "duplicate-header"],
)
def test_structurally_broken_file_stops_with_file_name_and_fix(
    tmp_path, content, encoding, expected
):
    raw = tmp_path / "raw"
    raw.mkdir()
    _write(raw / "orders.csv", content, encoding)
    with pytest.raises(RawDataError) as err:
        _load(raw, tmp_path / "w.duckdb")
    message = str(err.value)
    assert "orders.csv" in message and expected in message


def test_missing_orders_file_and_ambiguous_files_are_refused(tmp_path):
    with pytest.raises(RawDataError, match="orders.csv or orders.parquet"):
        _load(tmp_path, tmp_path / "w.duckdb")
    shutil.copy(FIXTURES / "minimal" / "orders.csv", tmp_path / "orders.csv")
    (tmp_path / "orders.parquet").write_bytes(b"")
    with pytest.raises(RawDataError, match="Keep one of them"):
        _load(tmp_path, tmp_path / "w.duckdb")


def test_a_broken_file_leaves_the_previous_load_intact(tmp_path):
    db = tmp_path / "w.duckdb"
    raw = tmp_path / "raw"
    shutil.copytree(FIXTURES / "quarantine", raw)
    _load(raw, db)
    before = _count(db, "orders"), _count(db, "customers")
    # customers breaks *after* orders would have been replaced: nothing may change.
    _write(raw / "orders.csv", (FIXTURES / "minimal" / "orders.csv").read_text())
    _write(raw / "customers.csv", "customer_id,email\nc1,a@x\nc2,b@x,extra\n")
    with pytest.raises(RawDataError, match="customers.csv"):
        _load(raw, db)
    assert (_count(db, "orders"), _count(db, "customers")) == before


def test_cli_reports_config_errors_without_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CW_RAW_DIR", str(tmp_path / "nowhere"))
    assert raw_load.main([]) == 2
    assert "CW_RAW_DIR" in capsys.readouterr().err
