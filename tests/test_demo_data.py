"""Tests of the demo-data generator (customer_warehouse/demo/).

The generated files are the warehouse's test bed, so these tests check what later stages rely
on: determinism, the raw-data contract, exact agreement between the exports and the ground truth
(purchase days, dropout, dirty rows and their row numbers, loyalty balances), and that the
simulation follows the stated BG/NBD and Gamma-Gamma model.
"""

from __future__ import annotations

import csv
import json
import math
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import integrate, special, stats

from customer_warehouse import demo
from customer_warehouse.demo import (
    BgNbdParams,
    GammaGammaParams,
    generate,
    main,
    simulate_bg_nbd,
)

REPO = Path(__file__).resolve().parents[1]
RATES = {"CNY": Decimal("1"), "USD": Decimal("7.2"), "HKD": Decimal("0.92")}
END_UTC = pd.Timestamp("2025-12-31 23:59:59", tz="UTC")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def read(folder: Path, name: str) -> pd.DataFrame:
    """A raw file as text, empty values as '' (how the raw loader sees them)."""
    csv_path, parquet_path = folder / f"{name}.csv", folder / f"{name}.parquet"
    assert csv_path.exists() != parquet_path.exists(), f"exactly one {name} file expected"
    if csv_path.exists():
        return pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    frame = pq.read_table(parquet_path).to_pandas()
    return frame.astype(object).where(frame.notna(), "")


def to_utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, format="ISO8601")


def cents(text: str) -> int:
    return int(Decimal(text) * 100)


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def clean_orders(folder: Path) -> pd.DataFrame:
    """Order rows that are not listed as dirty, with parsed time, CNY value and UTC date."""
    orders = read(folder, "orders")
    dirty = pd.read_csv(folder / "truth" / "dirty_orders.csv", dtype={"order_id": str})
    keep = ~(orders.index + 1).isin(dirty["row_number"])
    frame = orders[keep].copy()
    frame["ts"] = to_utc(frame["ordered_at"])
    frame["cny"] = [
        Decimal(a) * RATES[c] for a, c in zip(frame["amount"], frame["currency"], strict=True)
    ]
    frame["day"] = frame["ts"].dt.date
    return frame


def expected_repeat_purchases(T: np.ndarray, bg: BgNbdParams) -> tuple[np.ndarray, np.ndarray]:
    """E[X(T)] and P(dropped out by T) under BG/NBD, integrated numerically over p.

    Given p, integrating lambda out of E[X | lambda, p] = (1 - exp(-lambda p T)) / p gives
    (1 - (alpha / (alpha + p T))^r) / p, and P(dead | lambda, p) = 1 - exp(-lambda p T).
    Substituting p = u^(1/a) removes the Beta density's singularity at 0 when a < 1.
    """
    T = np.asarray(T, dtype=float)

    def integrand(u: float) -> np.ndarray:
        p = max(u ** (1.0 / bg.a), 1e-300)
        weight = (1.0 - p) ** (bg.b - 1.0) / (bg.a * special.beta(bg.a, bg.b))
        dead = 1.0 - (bg.alpha / (bg.alpha + p * T)) ** bg.r
        return np.concatenate([dead / p, dead]) * weight

    values, _error = integrate.quad_vec(integrand, 0.0, 1.0, epsabs=1e-10, epsrel=1e-8)
    return values[: len(T)], values[len(T) :]


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


# --------------------------------------------------------------------------------------------
# Fixtures: one CSV and one Parquet data set shared by the module (each takes ~1 s)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo_csv")
    generate(out, customers=2000, seed=7, fmt="csv", dirty_rate=0.02, quiet=True)
    return out


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo_parquet")
    generate(out, customers=800, seed=11, fmt="parquet", dirty_rate=0.01, quiet=True)
    return out


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
# The orders agree with the truth
# --------------------------------------------------------------------------------------------


def test_nothing_happens_after_the_end_date(csv_dir: Path) -> None:
    orders = clean_orders(csv_dir)
    assert orders["ts"].max() <= END_UTC
    assert orders["ts"].min() >= pd.Timestamp("2023-01-01", tz="UTC")
    changed = orders[orders["status"] != "completed"]
    assert (changed["status_changed_at"] != "").all()
    assert (orders.loc[orders["status"] == "completed", "status_changed_at"] == "").all()
    changed_at = to_utc(changed["status_changed_at"])
    assert (changed_at >= changed["ts"]).all() and changed_at.max() <= END_UTC
    delay = (changed_at - changed["ts"]).dt.total_seconds() / 86400
    cancelled = changed["status"] == "cancelled"
    assert delay[cancelled].max() <= 2
    assert delay[~cancelled & (changed_at < END_UTC - pd.Timedelta(hours=8))].min() >= 1
    for name, column in (("redemptions", "redeemed_at"), ("customers", "signed_up_at")):
        frame = read(csv_dir, name)
        assert to_utc(frame[column][frame[column] != ""]).max() <= END_UTC


def test_signup_is_before_every_order(csv_dir: Path) -> None:
    orders = clean_orders(csv_dir)
    customers = read(csv_dir, "customers")
    customers = customers[customers["customer_id"] != ""].drop_duplicates("customer_id")
    signup = to_utc(customers.set_index("customer_id")["signed_up_at"])
    first = orders.groupby("customer_id")["ts"].min()
    known = first.index.intersection(signup.index)
    assert len(known) > 1000
    assert (signup[known] <= first[known]).all()


def test_order_lines_add_up_to_the_amount(csv_dir: Path) -> None:
    items = read(csv_dir, "order_items")
    products = read(csv_dir, "products")
    assert set(items["product_id"]) <= set(products["product_id"])
    quantity = items["quantity"].astype(int)
    assert quantity.between(1, 3).all()
    items["line_cents"] = quantity * items["unit_price"].map(cents)
    assert (items["line_cents"] > 0).all()
    per_order = items.groupby("order_id").agg(
        total=("line_cents", "sum"), lines=("order_id", "size")
    )
    assert per_order["lines"].between(1, 4).all()
    clean = clean_orders(csv_dir).set_index("order_id")
    dirty = pd.read_csv(csv_dir / "truth" / "dirty_orders.csv", dtype={"order_id": str})
    conflicting = set(dirty.loc[dirty["expected_reason"] == "conflicting_duplicate", "order_id"])
    # Every real order has lines (conflicting duplicates are real orders too); rows that exist
    # only as dirty rows have none.
    assert set(per_order.index) == set(clean.index) | conflicting
    joined = per_order.join(clean["amount"].map(cents).rename("amount"), how="inner")
    assert len(joined) == clean.index.nunique()
    assert (joined["total"] == joined["amount"]).all()


def test_about_eight_percent_are_prospects(csv_dir: Path) -> None:
    orders = clean_orders(csv_dir)
    truth = pq.read_table(csv_dir / "truth" / "customers.parquet").to_pandas()
    buyers = set(orders.loc[orders["status"] == "completed", "customer_id"])
    prospects = set(truth["customer_id"]) - buyers
    assert prospects == set(truth.loc[truth["is_prospect"], "customer_id"])
    assert 0.06 < len(prospects) / len(truth) < 0.10


def test_purchase_days_and_dropout_match_the_truth_exactly(csv_dir: Path) -> None:
    orders = clean_orders(csv_dir)
    truth = pq.read_table(csv_dir / "truth" / "customers.parquet").to_pandas()
    truth = truth[~truth["is_prospect"]].set_index("customer_id")
    truth["dropped_out"] = truth["dropped_out"].astype(bool)
    completed = orders[orders["status"] == "completed"]
    per_customer = completed.groupby("customer_id")["day"].agg(["nunique", "min", "max"])
    per_customer = per_customer.join(truth, how="outer")
    assert per_customer["nunique"].notna().all() and per_customer["lambda_per_day"].notna().all()
    assert (per_customer["nunique"] - 1 == per_customer["repeat_purchase_days"]).all()
    assert (per_customer["min"] == per_customer["first_purchase_date"]).all()
    assert (per_customer["repeat_purchase_days"] <= per_customer["repeat_purchases"]).all()
    dropped = per_customer[per_customer["dropped_out"]]
    assert len(dropped) > 100
    # Dropout happens right after the last repeat purchase: nothing later, and that day is it.
    assert (dropped["max"] == dropped["dropout_date"]).all()
    assert (dropped["repeat_purchases"] >= 1).all()
    assert per_customer.loc[~per_customer["dropped_out"], "dropout_date"].isna().all()
    # Cancelled and refunded orders stay within the customer's purchase span.
    extra = orders[orders["status"] != "completed"].join(per_customer, on="customer_id")
    assert ((extra["day"] >= extra["min"]) & (extra["day"] <= extra["max"])).all()
    # Some occasions are split into two completed orders on the same day.
    orders_per_day = completed.groupby(["customer_id", "day"]).size()
    assert 0.02 < (orders_per_day >= 2).mean() < 0.12


def test_repeat_purchases_follow_bg_nbd_expectation(csv_dir: Path) -> None:
    params = json.loads((csv_dir / "truth" / "params.json").read_text())
    bg = BgNbdParams(**params["bg_nbd"])
    truth = pq.read_table(csv_dir / "truth" / "customers.parquet").to_pandas()
    truth = truth[~truth["is_prospect"]]
    expected_x, expected_dead = expected_repeat_purchases(truth["observation_days"].to_numpy(), bg)
    x = truth["repeat_purchases"].to_numpy()
    assert abs(x.mean() - expected_x.mean()) < 4.5 * x.std() / math.sqrt(len(x))
    dead = truth["dropped_out"].to_numpy(dtype=float)
    assert abs(dead.mean() - expected_dead.mean()) < 4.5 * dead.std() / math.sqrt(len(dead))
    # Heterogeneous and heavy-tailed: one-time buyers and heavy buyers both exist.
    assert 0.1 < (x == 0).mean() < 0.35
    assert np.percentile(x, 99) > 5 * max(np.median(x), 1)


def test_simulator_matches_bg_nbd_on_a_large_sample() -> None:
    """Mean repeat purchases, share dropped out and uniform timing of the purchases of
    customers still alive (given N, arrival times are uniform on [0, T])."""
    rng = np.random.default_rng(2024)
    bg = BgNbdParams(r=0.6, alpha=20.0, a=0.9, b=8.0)
    n = 300_000
    T = np.where(rng.random(n) < 0.5, 200.0, 900.0)
    lam = rng.gamma(bg.r, 1.0 / bg.alpha, n)
    p = rng.beta(bg.a, bg.b, n)
    draw = simulate_bg_nbd(rng, lam, p, T)
    x = draw.repeat_purchases
    expected_x, expected_dead = expected_repeat_purchases(np.array([200.0, 900.0]), bg)
    for length, ex, ed in zip((200.0, 900.0), expected_x, expected_dead, strict=True):
        chosen = length == T
        assert abs(x[chosen].mean() - ex) < 4 * x[chosen].std() / math.sqrt(chosen.sum())
        dead = draw.dropped_out[chosen]
        assert abs(dead.mean() - ed) < 4 * dead.std() / math.sqrt(chosen.sum())
    assert (x <= draw.arrivals).all() and (
        x[~draw.dropped_out] == draw.arrivals[~draw.dropped_out]
    ).all()
    owner = np.repeat(np.arange(n), x)
    times = draw.repeat_times
    assert len(times) == x.sum() and (times > 0).all() and (times < T[owner]).all()
    starts = np.cumsum(x) - x
    within = np.ones(len(times), dtype=bool)
    within[starts[x > 0]] = False
    assert (np.diff(times)[within[1:]] >= 0).all()  # sorted within each customer
    alive = ~draw.dropped_out[owner]
    scaled = (times / T[owner])[alive]
    assert stats.kstest(scaled[:200_000], "uniform").pvalue > 1e-4


def test_occasion_values_follow_gamma_gamma(csv_dir: Path) -> None:
    """A customer's purchases are worth p/nu on average and E[p/nu] = p*v/(q-1). Customers
    are independent (occasions of one customer share nu), so the check is on customer means:
    completed CNY over the latent number of purchases (two arrivals on one day are one day)."""
    params = json.loads((csv_dir / "truth" / "params.json").read_text())
    gg = GammaGammaParams(**params["gamma_gamma"])
    orders = clean_orders(csv_dir)
    completed = orders[orders["status"] == "completed"]
    spend = completed.groupby("customer_id")["cny"].sum().astype(float)
    truth = pq.read_table(csv_dir / "truth" / "customers.parquet").to_pandas()
    truth = truth[~truth["is_prospect"]].set_index("customer_id")
    per_purchase = spend / (truth["repeat_purchases"] + 1)
    expected = gg.p * gg.v / (gg.q - 1)
    assert per_purchase.notna().all()
    tolerance = 4.5 * per_purchase.std() / math.sqrt(len(per_purchase))
    assert abs(per_purchase.mean() - expected) < tolerance
    # Customers differ in spend: nu is heterogeneous, and the truth ranks customers.
    assert stats.spearmanr(per_purchase, truth.loc[per_purchase.index, "nu"]).statistic < -0.5
    discount = completed["discount_amount"].map(Decimal)
    assert 0.03 < (discount > 0).mean() < 0.3 and (discount >= 0).all()


def test_geography_and_season_shape_the_categories(csv_dir: Path) -> None:
    orders = clean_orders(csv_dir)[["order_id", "customer_id", "ts"]]
    items = read(csv_dir, "order_items").merge(orders, on="order_id")
    items = items.merge(read(csv_dir, "products"), on="product_id")
    customers = read(csv_dir, "customers").drop_duplicates("customer_id")
    cold = {name for name, _pop, is_cold, _cities in demo.PROVINCES if is_cold}
    province = customers.set_index("customer_id")["province"].str.strip().str.title()
    items["cold"] = items["customer_id"].map(province).isin(cold)
    items["winter"] = items["ts"].dt.month.isin([11, 12, 1, 2])
    share = items.groupby(["cold", "winter"])["category"].apply(lambda c: (c == "outerwear").mean())
    assert share[(True, True)] > 2 * share[(False, True)]
    assert share[(True, True)] > 2 * share[(True, False)]


# --------------------------------------------------------------------------------------------
# Dirty rows
# --------------------------------------------------------------------------------------------


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
# Loyalty and surveys
# --------------------------------------------------------------------------------------------


def replay_points(orders: pd.DataFrame, redemptions: pd.DataFrame) -> dict[str, bool]:
    """Whether each redemption fits the balance, under the rules of customer_warehouse/loyalty/
    at the base rate: every order earns floor(CNY) points at ordered_at, lots expire after 12
    calendar months and are used oldest first, a cancelled/refunded order claws its points back
    at status_changed_at (what is left of its lot, then the spent part from other lots).
    Same instant: expire, earn, redeem, clawback."""
    events = []
    for row in orders.itertuples():
        events.append((row.customer_id, row.ts, 1, row.order_id, int(row.cny)))
        if row.status != "completed":
            events.append((row.customer_id, row.changed, 3, row.order_id, 0))
    for row in redemptions.itertuples():
        events.append((row.customer_id, row.ts, 2, row.redemption_id, row.points))
    events.sort(key=lambda event: (event[0], event[1], event[2], event[3]))
    fits: dict[str, bool] = {}
    lots: dict[str, list] = {}  # order_id -> [expires_at, remaining, spent]
    customer = None
    for customer_id, moment, kind, key, points in events:
        if customer_id != customer:
            customer, lots = customer_id, {}
        for lot in lots.values():
            if lot[0] <= moment:
                lot[1] = 0  # expired
        if kind == 1:
            lots[key] = [moment + pd.DateOffset(months=12), points, 0]
            continue
        if kind == 2:
            fits[key] = points <= sum(lot[1] for lot in lots.values())
            if not fits[key]:
                continue
            need = points
        else:
            own = lots[key]
            need, own[1] = own[2], 0
        for lot_key, lot in lots.items():  # insertion order = oldest first
            if kind == 3 and lot_key == key:
                continue
            used = min(lot[1], need)
            lot[1] -= used
            lot[2] += used
            need -= used
    return fits


def test_redemptions_fit_the_balance_and_over_redemptions_do_not(csv_dir: Path) -> None:
    """Every clean redemption fits the balance and every listed over-redemption does not."""
    orders = clean_orders(csv_dir)
    orders["changed"] = pd.to_datetime(
        orders["status_changed_at"].replace("", None), utc=True, format="ISO8601"
    )
    redemptions = read(csv_dir, "redemptions")
    redemptions["ts"] = to_utc(redemptions["redeemed_at"])
    redemptions["points"] = redemptions["points"].astype(int)
    assert (redemptions["points"] > 0).all() and redemptions["redemption_id"].is_unique
    over = set(pd.read_csv(csv_dir / "truth" / "over_redemptions.csv")["redemption_id"])
    assert 0 < len(over) < 0.1 * len(redemptions)
    fits = replay_points(orders, redemptions)
    assert len(fits) == len(redemptions)
    assert all(fits[rid] for rid in fits if rid not in over)
    assert not any(fits[rid] for rid in over)
    completed = orders[orders["status"] == "completed"]
    repeat_buyers = completed.groupby("customer_id").size() > 1
    assert set(redemptions["customer_id"]) <= set(repeat_buyers[repeat_buyers].index)


def test_surveys_are_quarterly_and_follow_activity(csv_dir: Path) -> None:
    records = []
    for path in sorted((csv_dir / "surveys").iterdir()):
        year, quarter = path.stem.removeprefix("responses_").split("_q")
        if path.suffix == ".json":
            rows = json.loads(path.read_text(encoding="utf-8"))
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            rows = frame.to_dict("records")
            for row in rows:
                row["need_tags"] = row["need_tags"].split("|")
        for row in rows:
            moment = to_utc(pd.Series([row["submitted_at"]])).iloc[0]
            assert (moment.year, (moment.month - 1) // 3 + 1) == (int(year), int(quarter))
            records.append(row)
    responses = pd.DataFrame(records)
    assert responses["response_id"].is_unique
    nps = responses["nps"].astype(int)
    satisfaction = responses["satisfaction"].astype(int)
    assert nps.between(0, 10).all() and satisfaction.between(1, 5).all()
    assert all(set(tags) <= set(demo.NEED_TAGS) and tags for tags in responses["need_tags"])
    buyers = clean_orders(csv_dir)
    buyers = buyers[buyers["status"] == "completed"]
    respondents = responses["customer_id"].nunique()
    assert 0.08 < respondents / buyers["customer_id"].nunique() < 0.16
    spend = buyers.groupby("customer_id")["cny"].sum().astype(float)
    responses["spend"] = responses["customer_id"].map(spend)
    assert stats.spearmanr(responses["spend"], nps).statistic > 0.2
    assert stats.spearmanr(nps, satisfaction).statistic > 0.4


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
