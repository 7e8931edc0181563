"""Tests of the demo-data generator (customer_warehouse/demo/): determinism, files and columns,
dirty rows, the command line.

The generated files are the warehouse's test bed, so these tests check what later stages rely
on: determinism, the raw-data contract, exact agreement between the exports and the ground truth
(purchase days and dropout: tests/test_demo_data_orders.py; dirty rows and their row numbers:
here; loyalty balances: tests/test_demo_data_loyalty_and_surveys.py), and that the simulation
follows the stated BG/NBD and Gamma-Gamma model (tests/test_demo_data_orders.py)."""

from __future__ import annotations

import csv
import json
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from customer_warehouse import demo
from customer_warehouse.demo import generate, main

from .demo_data_helpers import RATES, REPO, clean_orders, file_bytes, read, to_utc

# --------------------------------------------------------------------------------------------
# Determinism and files
# --------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate(tmp_path / name, customers=400, seed=seed, dirty_rate=0.02, quiet=True)
    first, second, other = (file_bytes(tmp_path / name) for name in "abc")
    assert first == second
    assert first["orders.csv"] != other["orders.csv"]
    assert first["customers.csv"] != other["customers.csv"]


def test_chunk_size_does_not_change_the_output(tmp_path: Path) -> None:
    """Orders, lines and inserted dirty rows are written chunk by chunk; small chunks exercise
    the merging at every chunk border. CSV bytes are identical; Parquet row groups follow the
    chunks, so there the contents are compared."""
    for fmt in ("csv", "parquet"):
        for name, chunk_rows in (("big", 1 << 18), ("small", 97)):
            generate(
                tmp_path / f"{fmt}_{name}",
                customers=300,
                seed=5,
                fmt=fmt,
                dirty_rate=0.05,
                quiet=True,
                chunk_rows=chunk_rows,
            )
    assert file_bytes(tmp_path / "csv_big") == file_bytes(tmp_path / "csv_small")
    for name in ("orders", "order_items", "customers"):
        big = pq.read_table(tmp_path / "parquet_big" / f"{name}.parquet")
        small = pq.read_table(tmp_path / "parquet_small" / f"{name}.parquet")
        assert big.equals(small), name
    assert pq.ParquetFile(tmp_path / "parquet_small" / "orders.parquet").num_row_groups > 10


@pytest.mark.parametrize("fixture", ["csv_dir", "parquet_dir"])
def test_every_file_and_column_is_present(fixture: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(fixture)
    fmt = "csv" if fixture == "csv_dir" else "parquet"
    expected = {
        "orders": demo.ORDER_COLUMNS,
        "customers": demo.CUSTOMER_COLUMNS,
        "order_items": demo.ITEM_COLUMNS,
        "products": demo.PRODUCT_COLUMNS,
        "redemptions": demo.REDEMPTION_COLUMNS,
        "point_adjustments": demo.ADJUSTMENT_COLUMNS,
    }
    for name, columns in expected.items():
        assert (folder / f"{name}.{fmt}").is_file()
        frame = read(folder, name)
        assert tuple(frame.columns) == columns, name
        assert len(frame) > 0, name
    if fmt == "parquet":  # exports are text, as the raw loader keeps them
        schema = pq.read_schema(folder / "orders.parquet")
        assert all(str(field.type) == "string" for field in schema)
    surveys = sorted((folder / "surveys").iterdir())
    assert {path.suffix for path in surveys} == {".csv", ".json"}
    for path in surveys:
        assert path.name.startswith("responses_20")
        if path.suffix == ".json":
            records = json.loads(path.read_text(encoding="utf-8"))
            assert set(records[0]) == set(demo.SURVEY_COLUMNS)
            assert isinstance(records[0]["need_tags"], list)
        else:
            with path.open(encoding="utf-8", newline="") as handle:
                assert tuple(next(csv.reader(handle))) == demo.SURVEY_COLUMNS
    params = json.loads((folder / "truth" / "params.json").read_text())
    assert params["time_unit"] == "day"
    assert set(params["bg_nbd"]) == {"r", "alpha", "a", "b"}
    assert set(params["gamma_gamma"]) == {"p", "q", "v"}
    assert params["start"] == "2023-01-01" and params["end"] == "2025-12-31"
    truth = pq.read_table(folder / "truth" / "customers.parquet")
    for column in (
        "customer_id",
        "lambda_per_day",
        "p_dropout",
        "nu",
        "first_purchase_date",
        "repeat_purchases",
        "dropped_out",
        "dropout_date",
    ):
        assert column in truth.column_names


def test_values_match_the_seeds_and_id_formats(csv_dir: Path) -> None:
    """Channels, statuses, currencies and provinces are values the staging seeds know."""
    orders = clean_orders(csv_dir)
    seeds = REPO / "seeds"
    channels = set(pd.read_csv(seeds / "channel_aliases.csv")["raw_channel"])
    statuses = set(pd.read_csv(seeds / "order_status_aliases.csv")["raw_status"])
    currencies = set(pd.read_csv(seeds / "currency_rates.csv")["currency"])
    provinces = set(pd.read_csv(seeds / "region_mapping.csv")["province_key"])
    assert set(orders["channel"]) <= channels
    assert set(orders["status"]) <= statuses
    assert set(orders["currency"]) <= currencies
    assert orders["order_id"].str.fullmatch(r"O\d{9}").all()
    assert orders["customer_id"].str.fullmatch(r"C\d{7}").all()
    customers = read(csv_dir, "customers")
    ids = customers["customer_id"][customers["customer_id"] != ""]
    assert ids.str.fullmatch(r"C\d{7}").all()
    assert set(customers["province"].str.strip().str.lower()) <= provinces
    messy = (customers["province"] != customers["province"].str.strip().str.title()).mean()
    assert 0.005 < messy < 0.05
    assert (customers["email"].str.endswith("@example.com") | (customers["email"] == "")).all()
    assert set(customers["marketing_consent"]) == {"true", "false"}
    assert 0.6 < (customers["marketing_consent"] == "true").mean() < 0.8
    assert set(customers["gender"]) <= {"F", "M", ""}
    birth = customers["birth_date"]
    assert 0.02 < (birth == "").mean() < 0.09
    age = (pd.Timestamp("2025-12-31") - pd.to_datetime(birth[birth != ""])).dt.days / 365.25
    assert age.min() >= 18 and age.max() <= 83
    products = read(csv_dir, "products")
    assert products["product_id"].str.fullmatch(r"P\d{5}").all()
    assert products["product_id"].is_unique and len(products) == 300
    share = orders["currency"].value_counts(normalize=True)
    assert 0.94 < share["CNY"] < 0.995 and {"USD", "HKD"} <= set(share.index)
    offset = orders["ordered_at"].str.endswith("+08:00").mean()
    assert 0.85 < offset < 0.95
    assert (orders["ordered_at"].str.endswith("Z")).any()
    assert (~orders["ordered_at"].str.contains(r"Z|\+", regex=True)).any()


# --------------------------------------------------------------------------------------------
# Dirty rows
# --------------------------------------------------------------------------------------------


def expected_reasons_from_rules(orders: pd.DataFrame, customer_ids: set[str]) -> set:
    """(row_number, reason) of every order row that breaks a rule of docs/raw-data.md."""
    found = set()
    now = pd.Timestamp("2030-01-01", tz="UTC")
    parsed = pd.to_datetime(orders["ordered_at"], utc=True, format="ISO8601", errors="coerce")
    for position, row, moment in zip(
        range(1, len(orders) + 1), orders.itertuples(index=False), parsed, strict=True
    ):
        reason = None
        if not row.order_id:
            reason = "missing_order_id"
        elif not row.customer_id:
            reason = "missing_customer_id"
        elif not row.ordered_at:
            reason = "missing_ordered_at"
        else:
            try:
                amount = Decimal(row.amount)
            except InvalidOperation:
                amount = None
            if pd.isna(moment):
                reason = "unparseable_ordered_at"
            elif moment > now:
                reason = "future_ordered_at"
            elif amount is None:
                reason = "unparseable_amount"
            elif amount < 0:
                reason = "negative_amount"
            elif row.currency not in RATES:
                reason = "unknown_currency"
            elif amount * RATES[row.currency] > 1_000_000:
                reason = "absurd_amount"
            elif row.status not in ("completed", "cancelled", "refunded"):
                reason = "unknown_status"
            elif row.customer_id not in customer_ids:
                reason = "unknown_customer"
        if reason:
            found.add((position, reason))
    with_id = orders[orders["order_id"] != ""].copy()
    with_id["row_number"] = with_id.index + 1
    for _order_id, group in with_id.groupby("order_id"):
        if len(group) == 1:
            continue
        content = group[list(demo.ORDER_COLUMNS)].drop_duplicates()
        if len(content) == 1:
            found |= {(int(n), "exact_duplicate") for n in group["row_number"].iloc[1:]}
        else:
            found |= {(int(n), "conflicting_duplicate") for n in group["row_number"]}
    return found


@pytest.mark.parametrize("fixture", ["csv_dir", "parquet_dir"])
def test_dirty_orders_are_listed_exactly(fixture: str, request: pytest.FixtureRequest) -> None:
    """Every row that breaks a rule is listed with its reason and row number, and no other."""
    folder: Path = request.getfixturevalue(fixture)
    params = json.loads((folder / "truth" / "params.json").read_text())
    orders = read(folder, "orders")
    customer_ids = set(read(folder, "customers")["customer_id"]) - {""}
    truth = pd.read_csv(folder / "truth" / "dirty_orders.csv", dtype={"order_id": str})
    truth["order_id"] = truth["order_id"].fillna("")
    listed = set(zip(truth["row_number"], truth["expected_reason"], strict=True))
    assert len(listed) == len(truth)
    assert expected_reasons_from_rules(orders, customer_ids) == listed
    assert (orders["order_id"].iloc[truth["row_number"] - 1].to_numpy() == truth["order_id"]).all()
    assert set(truth["expected_reason"]) == set(demo.DIRTY_ORDER_REASONS)
    # Extra rows at about the requested rate, the same number for each reason.
    extra = truth[
        ~((truth["expected_reason"] == "conflicting_duplicate") & truth.duplicated("order_id"))
    ]
    counts = params["counts"]
    assert len(orders) == counts["orders"] + counts["dirty_order_rows"]
    rate = counts["dirty_order_rows"] / counts["orders"]
    assert abs(rate - params["dirty_rate"]) <= 0.5 * params["dirty_rate"]
    assert len(extra) == counts["dirty_order_rows"]
    per_reason = extra["expected_reason"].value_counts()
    assert per_reason.nunique() == 1
    # Conflicting duplicates come from cancelled/refunded orders: no purchase is lost.
    conflicting = orders.iloc[
        truth.loc[truth["expected_reason"] == "conflicting_duplicate", "row_number"] - 1
    ]
    assert (conflicting["status"] != "completed").all()
    distinctive = orders.iloc[truth["row_number"] - 1]
    assert (
        distinctive.loc[truth["expected_reason"].eq("unparseable_amount").to_numpy(), "amount"]
        == "12,5x"
    ).all()


def test_dirty_customers_are_listed_exactly(csv_dir: Path) -> None:
    customers = read(csv_dir, "customers")
    truth = pd.read_csv(csv_dir / "truth" / "dirty_customers.csv", dtype={"customer_id": str})
    truth["customer_id"] = truth["customer_id"].fillna("")
    found = set()
    customers["row_number"] = customers.index + 1
    for row in customers.itertuples():
        if not row.customer_id:
            found.add((row.row_number, "missing_customer_id"))
    for _cid, group in customers[customers["customer_id"] != ""].groupby("customer_id"):
        if len(group) > 1:
            if len(group[list(demo.CUSTOMER_COLUMNS)].drop_duplicates()) == 1:
                found |= {(n, "exact_duplicate") for n in group["row_number"].iloc[1:]}
            else:
                found |= {(n, "conflicting_duplicate") for n in group["row_number"]}
    assert found == set(zip(truth["row_number"], truth["expected_reason"], strict=True))
    assert set(truth["expected_reason"]) == set(demo.DIRTY_CUSTOMER_REASONS)
    # Conflicting duplicates are made from prospects, so no buyer loses its record.
    buyers = set(clean_orders(csv_dir)["customer_id"])
    assert not buyers & set(
        truth.loc[truth["expected_reason"] == "conflicting_duplicate", "customer_id"]
    )


def test_no_dirty_rows_by_default(tmp_path: Path) -> None:
    summary = generate(tmp_path, customers=300, seed=1, quiet=True)
    assert summary["dirty_order_rows"] == 0 and summary["dirty_customer_rows"] == 0
    assert len(pd.read_csv(tmp_path / "truth" / "dirty_orders.csv")) == 0
    assert len(read(tmp_path, "orders")) == summary["orders"]


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def test_cli_writes_parquet_and_replaces_the_other_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--customers", "300", "--seed", "9", "--quiet"]) == 0
    assert (out / "orders.csv").is_file() and (out / "order_items.csv").is_file()
    (out / "notes.txt").write_text("not generated")
    args = ["--out", str(out), "--customers", "300", "--format", "parquet", "--no-items"]
    assert (
        main([*args, "--dirty-rate", "0.01", "--start", "2024-01-01", "--end", "2024-12-31"]) == 0
    )
    captured = capsys.readouterr()
    assert "orders:" in captured.err and "wrote" in captured.out
    assert not (out / "orders.csv").exists() and (out / "orders.parquet").is_file()
    assert not (out / "order_items.csv").exists() and not (out / "order_items.parquet").exists()
    assert (out / "notes.txt").read_text() == "not generated"
    params = json.loads((out / "truth" / "params.json").read_text())
    assert params["start"] == "2024-01-01" and params["format"] == "parquet"
    orders = read(out, "orders")
    dirty = set(pd.read_csv(out / "truth" / "dirty_orders.csv")["row_number"])
    clean = orders[~(orders.index + 1).isin(dirty)]
    moments = to_utc(clean["ordered_at"])
    assert moments.min() >= pd.Timestamp("2024-01-01", tz="UTC")
    assert moments.max() <= pd.Timestamp("2024-12-31 23:59:59", tz="UTC")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--customers", "0"], "customers=0 is out of range"),
        (["--dirty-rate", "2"], "dirty_rate=2.0 must be between 0 and 0.5"),
        (["--start", "2025-01-01", "--end", "2024-01-01"], "must be after start"),
        (["--start", "01/02/2024"], "is not a date; write it as YYYY-MM-DD"),
        (["--format", "xlsx"], "invalid choice"),
    ],
)
def test_cli_rejects_bad_arguments_with_a_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path), "--quiet", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
