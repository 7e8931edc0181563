"""The raw-data contract: what loads, what stops the run, and that a failure changes nothing.

Odd files are written byte by byte in tmp_path (BOM, GB18030, CRLF, ragged rows, broken quotes,
a 5 MB field). What the loader reads is compared with what Python's csv module reads from the
same text: every data record is exactly one raw row, good (values equal) or malformed
(`_load_error`, `_raw_line`).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import shutil
from decimal import Decimal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from customer_warehouse import config, ingestion
from customer_warehouse.config import ConfigError, load_settings, parse_raw_encodings
from customer_warehouse.ingestion import LOAD_COLUMNS, SOURCES, RawDataError, load_raw

from .conftest import FIXTURES

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
# Delimiters, line endings, quoting
# --------------------------------------------------------------------------------------------

TRICKY_CUSTOMERS = [
    ["customer_id", "full_name", "province", "email"],
    ["c1", "张伟", "广东省", "a@example.com"],
    ["c2", "O'Brien, Pat", 'say "hi"', ""],
    ["c3", "two\nlines", "carriage\r\nreturn", " padded "],
    ["c4", "", "", "x;y|z\tw"],
]


def _csv_text(rows, delimiter=",", lineterminator="\r\n") -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator=lineterminator).writerows(rows)
    return out.getvalue()


@pytest.mark.parametrize(
    ("delimiter", "shown"),
    [(",", "',' (comma"), (";", "';' (semicolon"), ("\t", "tab ("), ("|", "'|' (pipe")],
    ids=["comma", "semicolon", "tab", "pipe"],
)
def test_delimiter_is_detected_from_the_header_and_logged(tmp_path, delimiter, shown):
    text = _csv_text(TRICKY_CUSTOMERS, delimiter)
    orders = _csv_text([ORDER_HEADER.split(","), ["1", "c1", "2025-01-01", "10"]], delimiter)
    raw = _raw_dir(tmp_path, orders_csv=orders.encode(), customers_csv=text.encode())
    lines: list[str] = []
    results = _load(raw, tmp_path / "w.duckdb", log=lines.append)
    _assert_matches_python_csv(tmp_path / "w.duckdb", "customers", text, delimiter)
    assert f"customers.csv: read as UTF-8 (detected), delimiter {shown}" in "\n".join(lines)
    assert {r.source: r.delimiter for r in results}["customers"] == delimiter


def test_a_header_that_splits_into_no_contract_columns_stops(tmp_path):
    raw = _raw_dir(tmp_path, orders_csv=b"order_id customer_id ordered_at amount\n1 c1 x 10\n")
    message = _stop(raw, tmp_path)
    assert "orders.csv: missing required column(s) order_id" in message
    assert "line 1" in message and "comma, semicolon, tab and pipe" in message


# --------------------------------------------------------------------------------------------
# Encodings
# --------------------------------------------------------------------------------------------


def test_utf8_with_bom_loads_and_the_bom_is_not_part_of_a_name(tmp_path):
    text = _csv_text(TRICKY_CUSTOMERS)
    orders = f"\ufeff{ORDER_HEADER}\n1,c1,2025-01-01,10\n"
    raw = _raw_dir(
        tmp_path, orders_csv=orders.encode(), customers_csv=b"\xef\xbb\xbf" + text.encode()
    )
    lines: list[str] = []
    results = _load(raw, tmp_path / "w.duckdb", log=lines.append)
    _assert_matches_python_csv(tmp_path / "w.duckdb", "customers", text)
    assert _rows(tmp_path / "w.duckdb", "orders", "order_id") == [("1",)]
    assert "customers.csv: read as UTF-8 with BOM (detected)" in "\n".join(lines)
    assert {r.source: r.encoding for r in results}["customers"] == "UTF-8 with BOM"


def test_gb18030_is_detected_transcoded_and_logged(tmp_path):
    text = _csv_text(TRICKY_CUSTOMERS)
    orders = f"{ORDER_HEADER}\n1,张伟,2025-01-01,10\n"
    raw = _raw_dir(
        tmp_path, orders_csv=orders.encode("gb18030"), customers_csv=text.encode("gb18030")
    )
    lines: list[str] = []
    _load(raw, tmp_path / "w.duckdb", log=lines.append)
    _assert_matches_python_csv(tmp_path / "w.duckdb", "customers", text)
    assert _rows(tmp_path / "w.duckdb", "customers", "province")[0] == ("广东省",)
    assert _rows(tmp_path / "w.duckdb", "orders", "customer_id, _source_file") == [
        ("张伟", "orders.csv")  # the original name, not the temporary UTF-8 copy's
    ]
    log = "\n".join(lines)
    assert "orders.csv: read as GB18030 (detected: not UTF-8 from line 2)" in log
    assert "customers.csv: read as GB18030" in log


def test_gb18030_after_a_long_ascii_start_is_still_detected(tmp_path):
    """The whole file is checked, not a sample: the first Chinese name comes after 2 MB."""
    ascii_rows = "".join(f"{i},c{i},2025-01-01,10\n" for i in range(100_000))
    text = f"{ORDER_HEADER}\n{ascii_rows}100000,广东省,2025-01-01,10\n"
    assert len(ascii_rows) > 2 * ingestion.HEAD_BYTES
    raw = _raw_dir(tmp_path, orders_csv=text.encode("gbk"))
    lines: list[str] = []
    _load(raw, tmp_path / "w.duckdb", log=lines.append)
    assert _count(tmp_path / "w.duckdb", "orders") == 100_001
    last = _rows(tmp_path / "w.duckdb", "orders", "customer_id")[-1]
    assert last == ("广东省",)
    assert "read as GB18030 (detected: not UTF-8 from line 100002)" in "\n".join(lines)


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        (f"{ORDER_HEADER}\n1,très bien,2025-01-01,10\n", "latin-1"),  # decodes as GB18030
        (f"{ORDER_HEADER}\n1,張偉 廣東省 台北市,2025-01-01,10\n", "big5"),
    ],
    ids=["latin-1", "big5"],
)
def test_text_that_only_happens_to_decode_as_gb18030_stops(tmp_path, text, encoding):
    data = text.encode(encoding)
    data.decode("gb18030")  # the trap: it does decode
    first_non_ascii = next(i for i, byte in enumerate(data) if byte > 127)
    message = _stop(_raw_dir(tmp_path, orders_csv=data), tmp_path)
    assert message.startswith(
        f"orders.csv: line 2 (byte {first_non_ascii}) is not valid UTF-8, and read as GB18030"
    )
    assert "set CW_RAW_ENCODING_ORDERS to the file's encoding" in message
    _load(tmp_path / "raw", tmp_path / "w.duckdb", orders=encoding)  # the fix works
    assert _rows(tmp_path / "w.duckdb", "orders", "customer_id") == [(text.split(",")[4],)]


def test_utf16_with_bom_excel_unicode_text_loads(tmp_path):
    text = _csv_text(TRICKY_CUSTOMERS, "\t")
    orders = f"{ORDER_HEADER}\n1,c1,2025-01-01,10\n"
    raw = _raw_dir(tmp_path, orders_csv=orders.encode(), customers_csv=text.encode("utf-16"))
    lines: list[str] = []
    _load(raw, tmp_path / "w.duckdb", log=lines.append)
    _assert_matches_python_csv(tmp_path / "w.duckdb", "customers", text, "\t")
    assert "customers.csv: read as UTF-16 (detected from its byte order mark)" in "\n".join(lines)


def test_a_configured_encoding_is_used_and_logged(tmp_path):
    text = f"{ORDER_HEADER}\n1,Müller,2025-01-01,10\n2,José,2025-01-01,12\n"
    raw = _raw_dir(tmp_path, orders_csv=text.encode("latin-1"))
    lines: list[str] = []
    _load(raw, tmp_path / "w.duckdb", log=lines.append, orders="cp1252")
    assert _rows(tmp_path / "w.duckdb", "orders", "customer_id") == [("Müller",), ("José",)]
    assert "orders.csv: read as CP1252 (configured: CW_RAW_ENCODING_ORDERS" in "\n".join(lines)


def test_encoding_settings_are_validated_and_per_file(tmp_path):
    assert parse_raw_encodings({}) == dict.fromkeys(config.RAW_SOURCE_NAMES, "auto")
    parsed = parse_raw_encodings({"CW_RAW_ENCODING": "GBK", "CW_RAW_ENCODING_ORDERS": "utf8"})
    assert parsed["orders"] == "utf-8" and parsed["customers"] == "gbk"
    settings = load_settings({"CW_RAW_DIR": str(tmp_path), "CW_RAW_ENCODING_PRODUCTS": "big5"})
    assert settings.raw_encodings["products"] == "big5"
    with pytest.raises(ConfigError) as err:
        load_settings({"CW_RAW_DIR": str(tmp_path), "CW_RAW_ENCODING": "simplified"})
    assert "CW_RAW_ENCODING='simplified'" in str(err.value) and "gb18030" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_raw_encodings({"CW_RAW_ENCODING_ORDERS": "base64"})
    assert "CW_RAW_ENCODING_ORDERS" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_raw_encodings({"CW_RAW_ENCODING_ORDER": "gbk"})  # typo: no such file
    assert "CW_RAW_ENCODING_ORDER is not a setting" in str(err.value)
    assert "CW_RAW_ENCODING_ORDERS" in str(err.value)


def test_load_raw_reads_the_encoding_variables_when_not_given(tmp_path, monkeypatch):
    """The Dagster asset calls load_raw without `encodings`: the variables must still apply."""
    text = f"{ORDER_HEADER}\n1,Müller,2025-01-01,10\n"
    raw = _raw_dir(tmp_path, orders_csv=text.encode("latin-1"))
    monkeypatch.setenv("CW_RAW_ENCODING_ORDERS", "latin-1")
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        load_raw(con, raw, log=lambda _line: None)
    assert _rows(tmp_path / "w.duckdb", "orders", "customer_id") == [("Müller",)]


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
