"""The raw-data contract: the delimiter is detected from the header; encodings (UTF-8 with a
BOM, GB18030, UTF-16, configured per file) are detected or configured, transcoded and logged;
text that only happens to decode stops."""

from __future__ import annotations

import csv
import io

import duckdb
import pytest

from customer_warehouse import config, ingestion
from customer_warehouse.config import ConfigError, load_settings, parse_raw_encodings
from customer_warehouse.ingestion import load_raw

from .raw_load_helpers import (
    ORDER_HEADER,
    _assert_matches_python_csv,
    _count,
    _load,
    _raw_dir,
    _rows,
    _stop,
)

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
