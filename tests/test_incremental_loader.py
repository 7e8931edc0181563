"""Deliveries over time, the loader on its own (fast): nothing read twice, a changed file replaces
its rows, a gone file takes them out, a broken delivery changes nothing, a full export and a
delivery folder are not mixed, and an erasure request blanks rows loaded before it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from customer_warehouse import ingestion
from customer_warehouse.ingestion import deliveries

# --------------------------------------------------------------------------------------------
# The loader on its own (fast)
# --------------------------------------------------------------------------------------------

ORDERS = "order_id,customer_id,ordered_at,amount,status,status_changed_at\n"


def _orders(raw: Path, name: str, *rows: str) -> Path:
    path = raw / "orders" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ORDERS + "".join(f"{row}\n" for row in rows))
    return path


def _raw_load(raw: Path, db: Path, log: Callable[[str], None] | None = None):
    with duckdb.connect(str(db)) as con:
        return {
            s.source: s
            for s in ingestion.load_raw(
                con, raw, log=log or (lambda _line: None), encodings={}, erasures=[]
            )
        }


def _table(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_loading_the_same_folder_twice_reads_nothing_and_adds_nothing(tmp_path, monkeypatch):
    raw, db = tmp_path / "raw", tmp_path / "w.duckdb"
    _orders(raw, "2025-01-01.csv", "A1,c1,2025-01-01,10,,", "A2,c2,2025-01-01,20,,")
    _orders(raw, "2025-01-02.parquet.tmp")  # not a delivery: ignored
    said: list[str] = []
    first = _raw_load(raw, db, said.append)["orders"]
    assert first.new_files == ["orders/2025-01-01.csv"] and first.rows == 2
    assert any("2025-01-02.parquet.tmp: not a .csv or .parquet delivery" in s for s in said)
    before = _table(db, "select * from raw.orders order by all")
    bookkeeping = _table(db, "select * from raw.deliveries order by all")
    # The file was hashed when it was fresh; once it is old, size and time decide alone.
    (raw / "orders" / "2025-01-01.csv").touch()
    _raw_load(raw, db)
    stat = (raw / "orders" / "2025-01-01.csv").stat()
    with duckdb.connect(str(db)) as con:  # as if loaded long after it was written
        con.execute("update raw.deliveries set verified_at = verified_at + interval 1 hour")
    bookkeeping = _table(db, "select * from raw.deliveries order by all")
    hashed: list[Path] = []
    real_hash = ingestion.file_sha256
    monkeypatch.setattr(deliveries, "file_sha256", lambda p: hashed.append(p) or real_hash(p))
    again = _raw_load(raw, db)["orders"]
    assert hashed == []  # not even read
    assert again.unchanged_files == ["orders/2025-01-01.csv"] and again.new_files == []
    assert _table(db, "select * from raw.orders order by all") == before
    assert _table(db, "select * from raw.deliveries order by all") == bookkeeping
    assert (raw / "orders" / "2025-01-01.csv").stat().st_mtime_ns == stat.st_mtime_ns


def test_a_changed_file_replaces_its_own_rows_and_a_gone_file_takes_them_out(tmp_path):
    raw, db = tmp_path / "raw", tmp_path / "w.duckdb"
    _orders(raw, "2025-01-01.csv", "A1,c1,2025-01-01,10,,", "A2,c2,2025-01-01,20,,")
    _orders(raw, "2025-01-02.csv", "A3,c3,2025-01-02,30,,")
    _raw_load(raw, db)
    changed = _orders(raw, "2025-01-01.csv", "A1,c1,2025-01-01,10,refunded,2025-01-02 08:00:00")
    result = _raw_load(raw, db)["orders"]
    assert result.changed_files == ["orders/2025-01-01.csv"]
    assert result.unchanged_files == ["orders/2025-01-02.csv"]
    sql = "select order_id, status, _source_file, _delivery from raw.orders order by 1"
    assert _table(db, sql) == [
        ("A1", "refunded", "orders/2025-01-01.csv", "2025-01-01"),
        ("A3", None, "orders/2025-01-02.csv", "2025-01-02"),
    ]  # fmt: skip
    (raw / "orders" / "2025-01-02.csv").unlink()
    assert _raw_load(raw, db)["orders"].removed_files == ["orders/2025-01-02.csv"]
    assert _table(db, "select order_id from raw.orders") == [("A1",)]
    assert _table(
        db, "select file, status, rows, status_changed_at is not null from raw.deliveries "
        "order by file, loaded_at"
    ) == [
        ("orders/2025-01-01.csv", "replaced", 2, True),
        ("orders/2025-01-01.csv", "loaded", 1, False),
        ("orders/2025-01-02.csv", "removed", 1, True),
    ]  # fmt: skip
    # Going back to the first content loads it again (its old record is replaced).
    changed.write_text(ORDERS + "A1,c1,2025-01-01,10,,\nA2,c2,2025-01-01,20,,\n")
    assert _raw_load(raw, db)["orders"].changed_files == ["orders/2025-01-01.csv"]
    assert _table(db, "select count(*), count(distinct file_sha256) from raw.deliveries") == [
        (3, 3)
    ]


def test_a_broken_delivery_changes_nothing_and_is_named_with_its_folder(tmp_path):
    raw, db = tmp_path / "raw", tmp_path / "w.duckdb"
    _orders(raw, "2025-01-01.csv", "A1,c1,2025-01-01,10,,")
    _raw_load(raw, db)
    before = _table(db, "select * from raw.deliveries order by all")
    _orders(raw, "2025-01-02.csv", "A2,c2,2025-01-02,20,,")
    (raw / "orders" / "2025-01-03.csv").write_text("order_id,amount\nA3,1\n")
    with pytest.raises(ingestion.RawDataError, match=r"^orders/2025-01-03.csv: missing required"):
        _raw_load(raw, db)
    assert _table(db, "select * from raw.deliveries order by all") == before
    assert _table(db, "select order_id from raw.orders") == [("A1",)]


def test_a_full_export_and_a_delivery_folder_together_are_refused(tmp_path):
    raw, db = tmp_path / "raw", tmp_path / "w.duckdb"
    _orders(raw, "2025-01-01.csv", "A1,c1,2025-01-01,10,,")
    (raw / "orders.csv").write_text(ORDERS)
    with pytest.raises(ingestion.RawDataError) as error:
        _raw_load(raw, db)
    message = str(error.value)
    assert "both orders.csv and the folder orders/" in message
    assert "move it into orders/" in message and "orders/0000-00-00.csv" in message
    (raw / "orders.csv").unlink()
    (raw / "orders" / "2025-01-01.parquet").write_bytes(b"PAR1")
    with pytest.raises(ingestion.RawDataError, match="both 2025-01-01.csv and 2025-01-01.parquet"):
        _raw_load(raw, db)
    shutil.rmtree(raw / "orders")
    (raw / "orders").mkdir()
    with pytest.raises(ingestion.RawDataError, match="holds no delivery"):
        _raw_load(raw, db)


def test_switching_from_a_full_export_to_deliveries_keeps_nothing_twice(tmp_path):
    raw, db = tmp_path / "raw", tmp_path / "w.duckdb"
    raw.mkdir()
    (raw / "orders.csv").write_text(ORDERS + "A1,c1,2025-01-01,10,,\n")
    assert _raw_load(raw, db)["orders"].file == "orders.csv"
    assert _table(db, "select _source_file, _delivery from raw.orders") == [
        ("orders.csv", "orders")
    ]
    (raw / "orders.csv").rename(tmp_path / "kept.csv")
    _orders(raw, "0000-00-00.csv", "A1,c1,2025-01-01,10,,")
    result = _raw_load(raw, db)["orders"]
    assert (result.removed_files, result.new_files) == (["orders.csv"], ["orders/0000-00-00.csv"])
    assert _table(db, "select order_id, _source_file from raw.orders") == [
        ("A1", "orders/0000-00-00.csv")
    ]


def test_an_erasure_request_blanks_rows_loaded_before_it(tmp_path):
    from customer_warehouse import privacy

    raw, db = tmp_path / "raw", tmp_path / "w.duckdb"
    _orders(raw, "2025-01-01.csv", "A1,c1,2025-01-01,10,,")
    (raw / "customers").mkdir()
    (raw / "customers" / "2025-01-01.csv").write_text(
        "customer_id,email,full_name\nc1,a@x.cn,Ann\nc2,b@x.cn,Bo\n"
    )
    _raw_load(raw, db)
    with duckdb.connect(str(db)) as con:
        ingestion.load_raw(
            con, raw, log=lambda _: None, encodings={}, erasures=[privacy.ErasureRequest("c1")]
        )
    assert _table(db, "select customer_id, email, full_name from raw.customers order by 1") == [
        ("c1", None, None),
        ("c2", "b@x.cn", "Bo"),
    ]
    # The request stays in force without its file: a later delivery cannot bring values back.
    (raw / "customers" / "2025-01-02.csv").write_text("customer_id,email\nc1,again@x.cn\n")
    _raw_load(raw, db)
    assert _table(db, "select count(*) from raw.customers where email = 'again@x.cn'") == [(0,)]
