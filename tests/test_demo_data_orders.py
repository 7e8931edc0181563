"""The demo-data generator's orders agree with the ground truth: nothing after the end date,
signup first, order lines adding up, prospects, purchase days and dropout exactly as in the
truth, and the simulation following the stated BG/NBD and Gamma-Gamma model."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy import integrate, special, stats

from customer_warehouse import demo
from customer_warehouse.demo import BgNbdParams, GammaGammaParams, simulate_bg_nbd

from .demo_data_helpers import END_UTC, cents, clean_orders, read, to_utc


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
