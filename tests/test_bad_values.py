"""Generated raw rows, good and bad, through a real build: nothing raises, nothing is lost.

Hypothesis writes whole raw folders (orders, customers, order lines; CSV in UTF-8, UTF-8 with
a BOM or GB18030, any of the four delimiters, LF or CRLF; or Parquet) in which every row carries
at most one planted defect from the classes a real export brings: a line with too many or too
few fields, numeric overflow, ``1e400``, ``NaN``, ``Infinity``, thousands separators, currency
symbols, impossible calendar dates (30 February), years 0001 and 9999, control characters,
oversized fields, missing values, unknown codes. Then the real thing runs: ``ingestion`` and a
full ``dbt build`` (every model and data test, as the Dagster job runs it). The invariants:

* the build succeeds (no value can make a model or a test error);
* every raw row is in exactly one place: the staged table or its rejects table;
* a row with a planted defect is rejected with exactly the reason code for that defect, and
  every code is explained in seeds/reject_reasons.csv (a dbt test in the build);
* a clean row is accepted and round-trips: ids exactly, amounts to the cent (half up),
  timestamps to the microsecond in UTC.

The examples are random locally and fixed in CI (``CI`` set: the ``ci`` profile derandomizes),
so CI is reproducible and local runs keep exploring.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customer_warehouse import ingestion

from .conftest import build_warehouse

settings.register_profile(
    "bad_values",
    max_examples=3,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
settings.register_profile(
    "bad_values_ci", parent=settings.get_profile("bad_values"), derandomize=True
)
PROFILE = "bad_values_ci" if os.environ.get("CI") else "bad_values"

MAX_ORDER_AMOUNT = Decimal("1000000")
CENT = Decimal("0.01")
RATES = {"CNY": Decimal("1"), "USD": Decimal("7.2"), "HKD": Decimal("0.92")}
CONTROL = ["\x00", "\x07", "\x1b", "\x7f", "\x0c"]
SOURCES = [spec.name for spec in ingestion.SOURCES]

# --------------------------------------------------------------------------------------------
# Values: (text written to the file, reject reason it must cause or None, parsed value)
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    values: dict[str, str]
    reason: str | None = None
    expected: dict[str, object] = field(default_factory=dict)
    #: Written instead of the values: a line with the wrong number of fields.
    malformed_fields: list[str] | None = None


def _money_text(value: Decimal, style: int) -> str:
    if style == 0:
        return f"{value:.2f}"
    if style == 1:
        return format(value.normalize(), "f")  # 12.5, 12
    if style == 2:
        return f"{value:.3f}"  # sub-cent digits: rounded half up
    return f"{value:.4e}"  # 1.2345e+02


good_amounts = st.builds(
    lambda cents, style: (Decimal(cents) / 100, style),
    st.integers(min_value=0, max_value=50_000_000),
    st.integers(min_value=0, max_value=3),
)

BAD_AMOUNTS: dict[str, list[str]] = {
    "non_finite_amount": ["NaN", "nan", "Infinity", "-inf", "1e400"],
    "formatted_amount": ["1,234.50", "¥12", "12 CNY", "USD 5.00", "12,5", "$ 3.10"],
    "absurd_amount": ["1e12", "99999999999999999999", "2000000.00", "1e7"],
    "negative_amount": ["-5.00", "-0.01", "-1e3"],
    "unparseable_amount": ["abc", "1_000", "12,5x", "--1", "0x10"],
    "missing_amount": ["", "   "],
}
BAD_ORDERED_AT: dict[str, list[str]] = {
    "unparseable_ordered_at": ["2024-02-30 10:00:00", "2023-13-01", "31/02/2024 25:00", "soon"],
    "implausible_ordered_at": ["0001-01-01 00:00:00", "1900-05-05"],
    "future_ordered_at": ["9999-12-31 23:59:59", "2999-01-01"],
    "missing_ordered_at": [""],
}

#: The order of the `case` in base_shop__orders: the first reason that applies wins.
ORDER_PRIORITY = [
    "oversized_field", "control_characters", "missing_order_id", "missing_customer_id",
    "missing_ordered_at", "unparseable_ordered_at", "future_ordered_at",
    "implausible_ordered_at", *BAD_AMOUNTS, "unknown_currency", "unknown_status",
]  # fmt: skip
ORDER_PRIORITY.remove("absurd_amount")
ORDER_PRIORITY.insert(ORDER_PRIORITY.index("unknown_currency") + 1, "absurd_amount")


def first_reason(reasons: set[str]) -> str | None:
    return min(reasons, key=ORDER_PRIORITY.index) if reasons else None


moments = st.datetimes(
    min_value=datetime(2016, 1, 1), max_value=datetime(2025, 12, 31), allow_imaginary=False
)
offsets = st.sampled_from([None, "Z", "+08:00", "+0800", "-05:00", "+00:00"])


def _timestamp_text(moment: datetime, offset: str | None, date_only: bool) -> tuple[str, datetime]:
    """Text as an export writes it, and the UTC timestamp the warehouse must read from it."""
    if date_only:
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return day.strftime("%Y-%m-%d"), day
    moment = moment.replace(microsecond=(moment.microsecond // 1000) * 1000)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}"
    if offset is None:
        return text, moment
    text += offset
    sign = -1 if offset.startswith("-") else 1
    digits = offset.replace(":", "")[1:] if offset != "Z" else "0000"
    shift = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return text, moment - sign * shift


ids = st.text(
    alphabet=st.characters(
        categories=["Lu", "Ll", "Nd", "Lo"], exclude_characters=",\"'\\", max_codepoint=0x9FFF
    ),
    min_size=1,
    max_size=12,
)


@st.composite
def order_rows(draw, count: int) -> list[Row]:
    rows: list[Row] = []
    for i in range(count):
        order_id = f"o{i}-{draw(ids)}"
        customer_id = f"c{draw(st.integers(0, 20))}"
        moment = draw(moments)
        ordered_at, utc = _timestamp_text(moment, draw(offsets), draw(st.booleans()))
        cents, style = draw(good_amounts)
        currency = draw(st.sampled_from(["CNY", "cny", "", "USD", "HKD"]))
        status = draw(st.sampled_from(["completed", "Paid", "REFUNDED", "cancelled", ""]))
        values = {
            "order_id": order_id,
            "customer_id": customer_id,
            "ordered_at": ordered_at,
            "amount": _money_text(cents, style),
            "currency": currency,
            "channel": draw(st.sampled_from(["app", "Online", "store", "", "kiosk"])),
            "status": status,
        }
        rate = RATES[(currency or "CNY").upper()]
        original = Decimal(values["amount"]).quantize(CENT, ROUND_HALF_UP)
        expected = {"order_id": order_id, "customer_id": customer_id, "ordered_at": utc,
                    "amount_original": original}  # fmt: skip
        reasons: set[str] = set()
        defect = draw(
            st.sampled_from(
                [None, None, "amount", "ordered_at", "control", "oversized", "order_id",
                 "customer_id", "currency", "status"]
            )
        )  # fmt: skip
        if defect == "amount":
            planted = draw(st.sampled_from(sorted(BAD_AMOUNTS)))
            values["amount"] = draw(st.sampled_from(BAD_AMOUNTS[planted]))
            reasons.add(planted)
        elif (original * rate).quantize(CENT, ROUND_HALF_UP) > MAX_ORDER_AMOUNT:
            reasons.add("absurd_amount")
        if defect == "ordered_at":
            planted = draw(st.sampled_from(sorted(BAD_ORDERED_AT)))
            values["ordered_at"] = draw(st.sampled_from(BAD_ORDERED_AT[planted]))
            reasons.add(planted)
        elif defect == "control":
            column = draw(st.sampled_from(["customer_id", "channel", "amount", "order_id"]))
            spot = draw(st.sampled_from(CONTROL))
            values[column] = values[column][:1] + spot + values[column][1:]
            reasons.add("control_characters")
        elif defect == "oversized":
            column = draw(st.sampled_from(["channel", "status", "amount"]))
            values[column] = values[column] + "9" * draw(st.integers(2_001, 60_000))
            reasons.add("oversized_field")
        elif defect == "order_id":
            values["order_id"] = draw(st.sampled_from(["", "  "]))
            reasons.add("missing_order_id")
        elif defect == "customer_id":
            values["customer_id"] = ""
            reasons.add("missing_customer_id")
        elif defect == "currency":
            values["currency"] = "XYZ"
            reasons.add("unknown_currency")
        elif defect == "status":
            values["status"] = "lost in transit"
            reasons.add("unknown_status")
        rows.append(Row(values, first_reason(reasons), expected))
    return rows


BAD_SIGNED_UP: dict[str, list[str]] = {
    "unparseable_signed_up_at": ["2023-02-29", "yesterday"],
    "future_signed_up_at": ["9999-01-01"],
    "implausible_signed_up_at": ["0001-01-01", "1969-12-31 23:59:59"],
}


@st.composite
def customer_rows(draw) -> list[Row]:
    rows = []
    for n in range(21):
        customer_id = f"c{n}"
        signed_up, utc = _timestamp_text(draw(moments), draw(offsets), draw(st.booleans()))
        values = {
            "customer_id": customer_id,
            "signed_up_at": signed_up,
            "birth_date": draw(st.sampled_from(["1980-02-29", "2024-02-30", "0001-01-01", ""])),
            "province": draw(st.sampled_from(["Guangdong", "广东省", "", "Atlantis"])),
            "email": f"{customer_id}@Example.COM",
            "full_name": draw(st.text(min_size=0, max_size=20).filter(lambda s: s.isprintable())),
            "marketing_consent": draw(st.sampled_from(["yes", "no", "", "1"])),
        }
        reason = None
        defect = draw(st.sampled_from([None, None, "signed_up", "control", "oversized"]))
        if defect == "signed_up":
            reason = draw(st.sampled_from(sorted(BAD_SIGNED_UP)))
            values["signed_up_at"] = draw(st.sampled_from(BAD_SIGNED_UP[reason]))
        elif defect == "control":
            values["full_name"] = "A" + draw(st.sampled_from(CONTROL)) + "B"
            reason = "control_characters"
        elif defect == "oversized":
            values["province"] = "x" * 5_000
            reason = "oversized_field"
        expected = {"customer_id": customer_id, "signed_up_at": utc,
                    "email": values["email"].lower()}  # fmt: skip
        rows.append(Row(values, reason, expected))
    return rows


BAD_QUANTITY = {
    "unparseable_quantity": ["1e3", "two", "1.5", ""],
    "non_positive_quantity": ["0", "-2"],
    "absurd_quantity": ["100001", "999999999999"],
}


@st.composite
def item_rows(draw, orders: list[Row]) -> list[Row]:
    rows = []
    for k, order in enumerate(orders[: len(orders) // 2]):
        values = {
            "order_id": order.values["order_id"],
            "product_id": f"p{k}",
            "quantity": draw(st.sampled_from(["1", "2", "3.0", "12"])),
            "unit_price": _money_text(*draw(good_amounts)),
        }
        expected_quantity = int(Decimal(values["quantity"]))
        reason = None
        if draw(st.booleans()):
            reason = draw(st.sampled_from(sorted(BAD_QUANTITY)))
            values["quantity"] = draw(st.sampled_from(BAD_QUANTITY[reason]))
        # The order's own problems come first (base_shop__order_items' `case`).
        if any(char in values["order_id"] for char in CONTROL):
            reason = "control_characters"
        elif not values["order_id"].strip():
            reason = "missing_order_id"
        elif order.reason is not None:  # also a malformed line: the order it meant is not there
            reason = "order_not_accepted"
        rows.append(Row(values, reason, {"quantity": expected_quantity}))
    return rows


def _malform(draw, rows: list[Row]) -> None:
    """Turn a few rows into lines with too many or too few fields (CSV only)."""
    for row in draw(st.lists(st.sampled_from(rows), max_size=4, unique_by=id)):
        fields = ["x" + row.values["order_id"], row.values["customer_id"], "2024-01-01"]
        if draw(st.booleans()):
            fields = [*fields, "1", "CNY", "app", "completed", "extra", "fields"]
        row.malformed_fields, row.reason = fields, "malformed_row"


@st.composite
def raw_folders(draw) -> dict:
    """A raw folder: rows per source, and how the files are written."""
    orders = draw(order_rows(draw(st.integers(30, 70))))
    file_format = draw(st.sampled_from(["csv", "csv", "parquet"]))
    if file_format == "csv":
        _malform(draw, orders)
    return {
        "orders": orders,
        "customers": draw(customer_rows()),
        "order_items": draw(item_rows(orders)),
        "format": file_format,
        "encoding": draw(st.sampled_from(["utf-8", "utf-8-sig", "gb18030"])),
        "delimiter": draw(st.sampled_from([",", ";", "\t", "|"])),
        # "mixed": CRLF and LF lines in one file, as when rows are appended by another program.
        "newline": draw(st.sampled_from(["\n", "\r\n", "mixed"])),
    }


# --------------------------------------------------------------------------------------------
# Writing and checking
# --------------------------------------------------------------------------------------------


def write_folder(folder: Path, shop: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for source in ("orders", "customers", "order_items"):
        rows: list[Row] = shop[source]
        columns = list(rows[0].values)
        if shop["format"] == "parquet":
            table = pa.table(
                {c: pa.array([r.values[c] for r in rows], pa.string()) for c in columns}
            )
            pq.write_table(table, folder / f"{source}.parquet")
            continue
        path = folder / f"{source}.csv"
        ends = ["\n", "\r\n"] if shop["newline"] == "mixed" else [shop["newline"]]
        with path.open("w", newline="", encoding=shop["encoding"]) as handle:
            for number, row in enumerate([None, *rows]):
                end = ends[number % len(ends)]
                if row is not None and row.malformed_fields is not None:
                    handle.write(shop["delimiter"].join(row.malformed_fields) + end)
                    continue
                writer = csv.writer(handle, delimiter=shop["delimiter"], lineterminator=end)
                writer.writerow(columns if row is None else [row.values[c] for c in columns])


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(UTC)


def check_source(warehouse, source: str, staged: str, rejects: str, rows: list[Row]) -> None:
    raw_rows = warehouse.scalar(f"select count(*) from raw.{source}")
    accepted = warehouse.query(f"select source_row from staging.{staged}")
    rejected = dict(warehouse.query(f"select source_row, reject_reason from staging.{rejects}"))
    assert raw_rows == len(rows)
    assert len(accepted) + len(rejected) == len(rows), f"{source}: rows lost or doubled"
    assert not {row for (row,) in accepted} & set(rejected)
    for number, row in enumerate(rows, start=1):
        got = rejected.get(number)
        assert got == row.reason, (
            f"{source} row {number}: expected {row.reason or 'accepted'}, got "
            f"{got or 'accepted'}; values { ({k: v[:60] for k, v in row.values.items()}) }"
        )


@pytest.mark.heavy
@settings(settings.get_profile(PROFILE))
@given(shop=raw_folders())
def test_generated_rows_are_accepted_exactly_or_rejected_with_their_reason(
    shop, tmp_path_factory
) -> None:
    work = tmp_path_factory.mktemp("bad_values")
    write_folder(work / "raw", shop)
    # GB18030 is configured, as a shop would (auto-detection is tested in
    # test_raw_load_delimiters_and_encodings.py).
    encoding = "gb18030" if shop["encoding"] == "gb18030" else "auto"
    warehouse = build_warehouse(
        work / "raw", work, exclude_unit_tests=True, encodings=dict.fromkeys(SOURCES, encoding)
    )
    malformed = warehouse.query(
        "select _source_row, _load_error from raw.orders where _load_error is not null"
    )
    assert {row for row, _ in malformed} == {
        n for n, row in enumerate(shop["orders"], 1) if row.malformed_fields is not None
    }

    check_source(warehouse, "orders", "stg_shop__orders", "order_rejects", shop["orders"])
    check_source(
        warehouse, "customers", "stg_shop__customers", "customer_rejects", shop["customers"]
    )
    check_source(
        warehouse, "order_items", "stg_shop__order_items", "order_item_rejects",
        shop["order_items"],
    )  # fmt: skip

    staged = {
        row[0]: row
        for row in warehouse.query(
            "select source_row, order_id, customer_id, ordered_at, amount_original "
            "from staging.stg_shop__orders"
        )
    }
    for number, row in enumerate(shop["orders"], start=1):
        if row.reason is None:
            _, order_id, customer_id, ordered_at, amount = staged[number]
            assert (order_id, customer_id) == (
                row.expected["order_id"],
                row.expected["customer_id"],
            )
            assert ordered_at == _as_utc(row.expected["ordered_at"]), row.values["ordered_at"]
            assert amount == row.expected["amount_original"], row.values["amount"]
    customers = {
        row[0]: row
        for row in warehouse.query(
            "select source_row, customer_id, signed_up_at, email from staging.stg_shop__customers"
        )
    }
    for number, row in enumerate(shop["customers"], start=1):
        if row.reason is None:
            _, customer_id, signed_up_at, email = customers[number]
            assert customer_id == row.expected["customer_id"]
            assert signed_up_at == _as_utc(row.expected["signed_up_at"])
            assert email == row.expected["email"]
    quantities = dict(
        warehouse.query("select source_row, quantity from staging.stg_shop__order_items")
    )
    for number, row in enumerate(shop["order_items"], start=1):
        if row.reason is None:
            assert quantities[number] == row.expected["quantity"]


def test_raw_contract_columns_match_the_generator() -> None:
    """The generator writes only contract columns (a renamed column would test nothing)."""
    for source, columns in (
        ("orders", ["order_id", "customer_id", "ordered_at", "amount", "currency", "channel",
                    "status"]),
        ("customers", ["customer_id", "signed_up_at", "birth_date", "province", "email",
                       "full_name", "marketing_consent"]),
        ("order_items", ["order_id", "product_id", "quantity", "unit_price"]),
    ):  # fmt: skip
        assert set(columns) <= set(ingestion.SOURCES_BY_NAME[source].columns)
