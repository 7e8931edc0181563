"""Helpers of the raw-data contract tests (tests/test_raw_load*.py): load a folder into an
in-memory DuckDB, read what loaded, expect a stop, write odd files, and compare what the loader
read with what Python's csv module reads from the same text."""

from __future__ import annotations

import csv
import io

import duckdb
import pytest

from customer_warehouse import config, ingestion
from customer_warehouse.ingestion import RawDataError, load_raw

ORDER_HEADER = "order_id,customer_id,ordered_at,amount"


def _load(raw_dir, db_path, log=None, **encodings):
    """Load `raw_dir`; `encodings` as source=codec (the rest auto), independent of os.environ."""
    settings = dict.fromkeys(config.RAW_SOURCE_NAMES, "auto") | encodings
    with duckdb.connect(str(db_path)) as con:
        return load_raw(
            con, raw_dir, log=log if log is not None else lambda _line: None, encodings=settings
        )


def _count(db_path, table):
    with duckdb.connect(str(db_path), read_only=True) as con:
        return con.execute(f"select count(*) from raw.{table}").fetchone()[0]


def _rows(db_path, table, columns="*"):
    with duckdb.connect(str(db_path), read_only=True) as con:
        return con.execute(f"select {columns} from raw.{table} order by _source_row").fetchall()


def _raw_dir(tmp_path, **files: bytes):
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    for name, data in files.items():
        (raw / name.replace("_csv", ".csv").replace("_parquet", ".parquet")).write_bytes(data)
    return raw


def _stop(raw, tmp_path, **encodings) -> str:
    with pytest.raises(RawDataError) as err:
        _load(raw, tmp_path / "w.duckdb", **encodings)
    return str(err.value)


def _python_records(text: str, delimiter: str = ",") -> tuple[list[str], list[list[str]]]:
    """The header and every non-blank record after it, as Python's csv module reads them."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader)
    return header, [record for record in reader if record]


def _assert_matches_python_csv(db_path, table, text, delimiter=","):
    """One raw row per data record, in order; good rows hold exactly the csv module's values."""
    header, records = _python_records(text, delimiter)
    spec = ingestion.SOURCES_BY_NAME[table]
    names = [name.strip().lower() for name in header]
    rows = _rows(db_path, table, f"{', '.join(spec.columns)}, _source_row, _load_error")
    assert [row[-2] for row in rows] == list(range(1, len(records) + 1))
    for row, record in zip(rows, records, strict=True):
        load_error = row[-1]
        if len(record) == len(header):
            assert load_error is None, (row, record)
            values = dict(zip(spec.columns, row, strict=False))
            for name, value in zip(names, record, strict=True):
                if name in values:
                    # DuckDB reads an empty field as NULL
                    assert (values[name] or "") == value, (name, row, record)
        else:
            expected = "too_many_fields" if len(record) > len(header) else "too_few_fields"
            assert load_error == expected, (row, record)
            assert set(row[: len(spec.columns)]) == {None}
