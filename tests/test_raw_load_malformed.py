"""The raw-data contract: malformed rows are kept with a reason, never lost (ragged rows, line
ends, quotes, huge fields); whole-file problems stop the run naming the file, the line and the
fix."""

from __future__ import annotations

import codecs
import shutil

import pytest

from customer_warehouse.ingestion import RawDataError

from .conftest import FIXTURES
from .raw_load_helpers import (
    ORDER_HEADER,
    _assert_matches_python_csv,
    _count,
    _load,
    _python_records,
    _raw_dir,
    _rows,
    _stop,
)

# --------------------------------------------------------------------------------------------
# Malformed rows: kept with a reason, never lost
# --------------------------------------------------------------------------------------------


def test_ragged_rows_are_kept_with_their_line_and_numbered_like_every_record(tmp_path):
    lines = [
        f"{ORDER_HEADER},currency",
        "1,c1,2025-01-01,10,CNY",
        "",  # a blank line is not a record
        "2,c2,2025-01-02,11",  # too few
        '3,"c3, with comma",2025-01-03,12,CNY',
        "4,c4,2025-01-04,13,CNY,surplus",  # too many
        '5,"c5 spans\r\n\r\ntwo lines",2025-01-05,14,CNY',  # a blank line inside quotes
        "",
        '6,"multi\nline",too,few',  # too few, spread over two lines
        "7,c7,2025-01-07,15,CNY",
        '8,"8"x,2025-01-08,16,CNY',  # quoting broken within the line
        "9,c9,2025-01-09,17,CNY",
    ]
    text = "\r\n".join(lines) + "\r\n"
    raw = _raw_dir(tmp_path, orders_csv=text.encode())
    log: list[str] = []
    results = _load(raw, tmp_path / "w.duckdb", log=log.append)
    db = tmp_path / "w.duckdb"
    _, records = _python_records(text)
    assert len(records) == 9 == _count(db, "orders")
    rows = {
        row[0]: row[1:]
        for row in _rows(db, "orders", "_source_row, order_id, customer_id, _load_error, _raw_line")
    }
    assert rows[1] == ("1", "c1", None, None)
    assert rows[2] == (None, None, "too_few_fields", "2,c2,2025-01-02,11")
    assert rows[3] == ("3", "c3, with comma", None, None)
    assert rows[4] == (None, None, "too_many_fields", "4,c4,2025-01-04,13,CNY,surplus")
    assert rows[5] == ("5", "c5 spans\r\n\r\ntwo lines", None, None)
    assert rows[6] == (None, None, "too_few_fields", '6,"multi\nline",too,few')
    assert rows[7] == ("7", "c7", None, None)
    assert rows[8] == (None, None, "bad_quoting", '8,"8"x,2025-01-08,16,CNY')
    assert rows[9] == ("9", "c9", None, None)
    assert next(r for r in results if r.source == "orders").malformed_rows == 4
    # line 4 of the file is the first malformed row (the blank line 3 counts as a line)
    assert "orders.csv: 4 malformed row(s) kept with _load_error (first: line 4" in "\n".join(log)


def test_many_records_with_ragged_rows_and_blank_lines_match_python_csv(tmp_path):
    """A file large enough for DuckDB's parallel reader, with malformed rows everywhere."""
    lines = [f"{ORDER_HEADER},status"]
    for i in range(60_000):
        kind = i % 997
        if kind == 1:
            lines.append("")
        elif kind == 2:
            lines.append(f"{i},c{i},2025-01-01")
        elif kind == 3:
            lines.append(f'{i},"c{i}\n\nsecond line, ""quoted""",2025-01-01,{i},done')
        elif kind == 4:
            lines.append(f"{i},c{i},2025-01-01,{i},done,extra,more")
        else:
            lines.append(f"{i},customer {i},2025-01-{1 + i % 28:02d} 10:00:00,{i}.50,done")
    text = "\n".join(lines) + "\n"
    raw = _raw_dir(tmp_path, orders_csv=text.encode())
    _load(raw, tmp_path / "w.duckdb")
    _assert_matches_python_csv(tmp_path / "w.duckdb", "orders", text)


def test_cr_only_line_ends_and_unnamed_trailing_columns(tmp_path):
    """Old Mac exports end lines in CR only; a trailing delimiter makes nameless columns."""
    text = (
        f"{ORDER_HEADER},,\r1,c1,2025-01-01,10,,\r\r2,c2,2025-01-02\r"
        '"3\r\r",c3,2025-01-03,12,,\r\r4,c4\r5,c5,2025-01-05,14,,\r'
    )
    raw = _raw_dir(tmp_path, orders_csv=text.encode())
    log: list[str] = []
    results = _load(raw, tmp_path / "w.duckdb", log=log.append)
    _assert_matches_python_csv(tmp_path / "w.duckdb", "orders", text)
    assert results[0].ignored_columns == [
        "(column 5 without a name)",
        "(column 6 without a name)",
    ]
    assert "(first: line 4, too_few_fields)" in "\n".join(log)


@pytest.mark.parametrize(
    "ends",
    [["\n", "\r\n"], ["\r\n", "\n", "\n"], ["\r\n", "\r"]],
    ids=["lf-then-crlf", "crlf-then-lf", "crlf-and-cr"],
)
def test_mixed_line_ends_load_every_row(tmp_path, ends):
    """Rows appended by another program (Python's csv writes CRLF onto an LF export): DuckDB
    alone stops with "state machine reached an invalid state"; the loader reads them all."""
    records = [f"{n},c{n},2025-01-{n:02d},{n}.50" for n in range(1, 13)]
    records[4] = '5,"c5, the second",2025-01-05,5.50'
    text = (
        ORDER_HEADER
        + ends[0]
        + "".join(record + ends[n % len(ends)] for n, record in enumerate(records))
    )
    raw = _raw_dir(tmp_path, orders_csv=text.encode())
    log: list[str] = []
    _load(raw, tmp_path / "w.duckdb", log=log.append)
    assert _count(tmp_path / "w.duckdb", "orders") == 12
    _assert_matches_python_csv(tmp_path / "w.duckdb", "orders", text.replace("\r\n", "\n"))
    assert "mixes CRLF and LF line ends" in "\n".join(log)


def test_a_file_where_no_row_fits_the_header_stops(tmp_path):
    raw = _raw_dir(
        tmp_path, orders_csv=f"{ORDER_HEADER}\n1;c1;2025-01-01;10\n2;c2;2025-01-01;10\n".encode()
    )
    message = _stop(raw, tmp_path)
    assert "orders.csv: none of its 2 row(s) has the header's 4 fields (line 2" in message
    assert "Fix: re-export the file" in message


def test_a_quote_that_is_never_closed_stops_at_the_line_where_it_opened(tmp_path):
    text = (
        f'{ORDER_HEADER}\n1,"two\nlines",2025-01-01,10\n2,张伟,2025-01-02,11\n'
        '3,"never closed,2025-01-03,12\n4,c4,2025-01-04,13\n5,c5,2025-01-05,14\n'
    )
    message = _stop(_raw_dir(tmp_path, orders_csv=text.encode()), tmp_path)
    assert "orders.csv: the quoted value that starts on line 5 is never closed" in message
    assert "next 2 line(s)" in message and 'is written ""' in message


def test_a_field_of_several_megabytes_loads_as_text(tmp_path):
    huge_amount = "9" * 5_000_000
    huge_name = "名" * 2_000_000  # 6 MB of UTF-8
    text = (
        f"{ORDER_HEADER}\n1,c1,2025-01-01,{huge_amount}\n"
        f'2,"{huge_name}",2025-01-01,10\n3,c3,2025-01-01,{huge_amount},extra\n4,c4,2025-01-01,1\n'
    )
    raw = _raw_dir(tmp_path, orders_csv=text.encode())
    _load(raw, tmp_path / "w.duckdb")
    rows = _rows(
        tmp_path / "w.duckdb",
        "orders",
        "_source_row, length(amount), length(customer_id), _load_error, length(_raw_line)",
    )
    assert rows == [
        (1, 5_000_000, 2, None, None),
        (2, 2, 2_000_000, None, None),
        (3, None, None, "too_many_fields", 5_000_000 + len("3,c3,2025-01-01,,extra")),
        (4, 1, 2, None, None),
    ]


# --------------------------------------------------------------------------------------------
# Whole-file problems: stop, naming the file, the line and the fix
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"orders_csv": b""}, ["orders.csv is empty (0 bytes)", "re-export it"]),
        (
            {"orders_csv": b"1,2\n", "customers_csv": b""},
            ["customers.csv is empty (0 bytes)", "delete it if you have no customers data"],
        ),
        ({"orders_csv": b"\xef\xbb\xbf \r\n\n"}, ["orders.csv holds only blank space"]),
        (
            {"orders_csv": b"\n" + ORDER_HEADER.encode() + b"\n1,c1,x,1\n"},
            ["orders.csv: line 1 is empty", "header row"],
        ),
        (
            {"orders_csv": b"order_id,customer_id,amount\n1,c1,10\n"},
            ["orders.csv: missing required column(s) ordered_at", "Fix: add them"],
        ),
        (
            {"orders_csv": b"order_id,order_id,customer_id,ordered_at,amount\n"},
            ["orders.csv: column(s) order_id appear more than once", "line 1"],
        ),
        (
            {
                "orders_csv": f"{ORDER_HEADER}\n1,c1,2025-01-01,10\n2,\xff\xfe,x,1\n".encode(
                    "latin-1"
                )
            },
            [
                "orders.csv: byte 60 (line 3) is neither UTF-8 nor GB18030",
                "CW_RAW_ENCODING_ORDERS",
                "iconv -f <ENCODING> -t UTF-8 orders.csv",
            ],
        ),
        (
            {
                "orders_csv": f"{ORDER_HEADER}\n1,张伟,2025-01-01,10\n".encode()
                + "2,广东省,2025-01-01,10\n".encode("gb18030")
            },
            ["orders.csv: line 3 (byte ", "not valid UTF-8", "mixes encodings", "sed -n '3p'"],
        ),
    ],
    ids=[
        "empty-orders",
        "empty-optional-file",
        "bom-and-blank-lines-only",
        "blank-first-line",
        "missing-column",
        "duplicate-header",
        "neither-utf8-nor-gb18030",
        "mixed-utf8-and-gb18030",
    ],
)
def test_whole_file_problems_stop_with_file_line_and_fix(tmp_path, files, expected):
    if "orders_csv" in files and "customers_csv" in files:
        files["orders_csv"] = f"{ORDER_HEADER}\n1,c1,2025-01-01,10\n".encode()
    message = _stop(_raw_dir(tmp_path, **files), tmp_path)
    for part in expected:
        assert part in message, message
    assert "Fix" in message or "fix" in message


def test_bytes_that_are_not_the_configured_encoding_stop_with_the_line(tmp_path):
    text = f"{ORDER_HEADER}\n1,c1,2025-01-01,10\n2,张伟,2025-01-01,10\n"
    raw = _raw_dir(tmp_path, orders_csv=text.encode("gb18030"))
    message = _stop(raw, tmp_path, orders="utf-8")
    assert message.startswith("orders.csv: byte 60 (line 3) is not valid UTF-8 (configured")
    assert "CW_RAW_ENCODING_ORDERS" in message and "iconv -f" in message
    message = _stop(_raw_dir(tmp_path, orders_csv=b"\xff" + text.encode()), tmp_path, orders="gbk")
    assert message.startswith("orders.csv: byte 0 (line 1) is not valid GBK")


@pytest.mark.parametrize("how", ["configured", "bom"])
def test_bad_bytes_far_into_a_utf8_file_stop_with_the_line(tmp_path, how):
    """Past the first megabyte, DuckDB itself finds them (auto checks only BOM-less files)."""
    ascii_rows = "".join(f"{i},c{i},2025-01-01,10\n" for i in range(100_000))
    data = f"{ORDER_HEADER}\n{ascii_rows}".encode() + "x,张伟,2025-01-01,10\n".encode("gbk")
    if how == "bom":
        data = codecs.BOM_UTF8 + data
    encodings = {"orders": "utf-8"} if how == "configured" else {}
    message = _stop(_raw_dir(tmp_path, orders_csv=data), tmp_path, **encodings)
    assert message.startswith("orders.csv: line 100002 is not valid UTF-8, though the file")
    assert "CW_RAW_ENCODING_ORDERS" in message and "iconv -f" in message


def test_header_only_files_load_as_empty_tables(tmp_path):
    raw = _raw_dir(
        tmp_path,
        orders_csv=f"{ORDER_HEADER}\r\n".encode(),
        redemptions_csv=b"customer_id,redeemed_at,points",  # no line break at all
    )
    results = {r.source: r for r in _load(raw, tmp_path / "w.duckdb")}
    assert results["orders"].rows == 0 and results["orders"].file == "orders.csv"
    assert results["redemptions"].rows == 0 and results["redemptions"].file == "redemptions.csv"


def test_missing_orders_file_and_ambiguous_files_are_refused(tmp_path):
    with pytest.raises(RawDataError, match="orders.csv or orders.parquet"):
        _load(tmp_path, tmp_path / "w.duckdb")
    shutil.copy(FIXTURES / "minimal" / "orders.csv", tmp_path / "orders.csv")
    (tmp_path / "orders.parquet").write_bytes(b"")
    with pytest.raises(RawDataError, match="Keep one of them"):
        _load(tmp_path, tmp_path / "w.duckdb")
