"""The demo-data generator's redemptions fit the loyalty balance (over-redemptions do not), and
its surveys are quarterly and follow activity."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from scipy import stats

from customer_warehouse import demo

from .demo_data_helpers import clean_orders, read, to_utc

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
