"""Deliveries over time, and incremental models proven equal to a full refresh.

A shop's exports arrive as one file per entity and day (`orders/2025-03-28.csv`, ...). Four
daily deliveries, built from demo data, hold what real deliveries hold: late orders (dated days
before their delivery), exact copies of earlier orders, status changes (completed, then refunded
or cancelled in a later delivery, one refund dated after the day it arrives), corrections (a new
amount), a changed file delivered again under the same name (an order gone, an amount fixed),
conflicting copies of an order inside one delivery, customers who arrive after their orders,
a customer whose consent changes, order lines and a product delivered again (the deliveries and
the comparison: tests/incremental_helpers.py).

The warehouse is built day by day as a scheduled run would (load, then `dbt build` with the
as-of date on the delivery day), incrementally; then a fresh warehouse is loaded from the same
folder and built with `dbt build --full-refresh`. Every staging, intermediate and mart relation
must be equal row by row (EXCEPT ALL both ways). The loader's bookkeeping on its own is in
tests/test_incremental_loader.py."""

from __future__ import annotations

import re

import duckdb
import pytest

from customer_warehouse import demo, ingestion

from .conftest import STAGING_SPLITS, Warehouse
from .incremental_helpers import (
    DAYS,
    INCREMENTAL_MODELS,
    InProcessDbt,
    Shop,
    _batch_sizes,
    _differences,
    _load,
    _plus,
)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """Day by day incremental, then a full refresh on the same folder."""
    base = tmp_path_factory.mktemp("incremental")
    demo_dir = base / "demo"
    demo.generate(
        demo_dir,
        customers=300,
        seed=7,
        dirty_rate=0.02,
        start="2024-09-01",
        end=DAYS[-1],
        quiet=True,
    )
    shop = Shop(demo_dir)
    raw = base / "raw"
    daily = base / "daily" / "warehouse.duckdb"
    full = base / "full" / "warehouse.duckdb"
    daily.parent.mkdir()
    full.parent.mkdir()
    dbt = InProcessDbt(base)
    outputs: dict[str, str] = {}
    results: dict[str, list] = {}
    loads: dict[str, list[ingestion.LoadedSource]] = {}
    batches: dict[str, dict[str, tuple[int, int]]] = {}
    for day in DAYS:
        shop.deliver(raw, day)
        loads[day] = _load(raw, daily)
        outputs[day], results[day] = dbt.build(daily, raw, day, tests=day == DAYS[-1])
        batches[day] = _batch_sizes(daily, results[day])
    _load(raw, full)
    dbt.build(full, raw, DAYS[-1], "--full-refresh", tests=False)
    return {
        "shop": shop,
        "raw": raw,
        "daily": Warehouse(daily, raw, daily.parent),
        "full": Warehouse(full, raw, full.parent),
        "outputs": outputs,
        "results": results,
        "loads": loads,
        "batches": batches,
    }


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_daily_incremental_builds_equal_a_full_refresh_row_by_row(scenario):
    relations, differ = _differences(scenario["daily"].path, scenario["full"].path)
    assert differ == {}
    # Everything was compared: every layer, the incremental models and the marts.
    for relation in (
        *(f"staging.{name}" for name in INCREMENTAL_MODELS[:5]),
        *(f"intermediate.{name}" for name in INCREMENTAL_MODELS[5:]),
        "staging.stg_shop__orders",
        "staging.superseded_orders",
        "marts.customer_features",
        "marts.customer_tiers",
        "marts.crm_reminders",
        "marts.tier_summary",
    ):
        assert relation in relations
    assert len(relations) >= 40


@pytest.mark.slow
def test_the_daily_runs_were_incremental_and_filtered(scenario):
    """Day 2 re-delivers a changed file: staging handles it row by row, the customer-keyed
    models rebuild; days 3 and 4 filter everything. A filtered run writes only what changed."""
    outputs = scenario["outputs"]

    def mode(day: str, model: str) -> str:
        found = re.search(rf"\.\"{model}\": incremental run, (\w+)", outputs[day])
        assert found, (day, model)
        return found.group(1)

    assert all(f'{m}": incremental run' not in outputs[DAYS[0]] for m in INCREMENTAL_MODELS)
    for model in INCREMENTAL_MODELS[:5]:
        assert [mode(day, model) for day in DAYS[1:]] == ["filter"] * 3, model
    for model in INCREMENTAL_MODELS[5:]:
        assert [mode(day, model) for day in DAYS[1:]] == ["rebuild", "filter", "filter"], model
    assert "an order delivery was replaced or removed" in outputs[DAYS[1]]

    # A filtered run's SQL selects what changed, not the history: on days 3 and 4 the rows of
    # the new delivery's orders (and of the rows that share their ids), the customers they
    # touched; on day 1 and in a rebuild everything.
    batches = scenario["batches"]
    for model in INCREMENTAL_MODELS:
        selected, rows = batches[DAYS[0]][model]
        assert selected == rows, model
    for day in DAYS[2:]:
        for model in ("base_shop__orders", "base_shop__order_items", *INCREMENTAL_MODELS[5:]):
            selected, rows = batches[day][model]
            assert 0 < selected < rows / 4, (day, model, selected, rows)
    selected, rows = batches[DAYS[1]]["int_orders_aggregated_to_customer_days"]
    assert selected == rows  # the rebuild


@pytest.mark.slow
def test_the_latest_delivery_wins_and_every_raw_row_is_accounted_for(scenario):
    shop, wh = scenario["shop"], scenario["daily"]
    orders = wh.keyed(
        "select order_id, status, cast(status_changed_at as varchar), amount, source_file "
        "from staging.stg_shop__orders"
    )
    assert orders[shop.refund_now["order_id"]][:2] == ("refunded", "2025-03-30 10:00:00")
    assert orders[shop.refund_later["order_id"]][:2] == ("refunded", "2025-03-30 04:00:00")
    assert orders[shop.cancel["order_id"]][0] == "cancelled"
    assert orders[shop.refund_day3["order_id"]][0] == "refunded"
    assert str(orders[shop.correction["order_id"]][2]) == _plus(shop.correction["amount"], 10)
    assert str(orders[shop.fix["order_id"]][2]) == _plus(shop.fix["amount"], 5)
    for late in shop.late:
        assert orders[late["order_id"]][3] == f"orders/{DAYS[2]}.csv"
    # The order the changed file no longer holds is gone from every table.
    vanished = shop.vanish["order_id"]
    assert vanished not in orders
    for table in ("order_rejects", "superseded_orders"):
        assert (
            wh.scalar(f"select count(*) from staging.{table} where order_id = ?", [vanished]) == 0
        )
    # Conflicting copies inside one delivery: both quarantined; the older copy is history.
    conflict = shop.conflict["order_id"]
    assert conflict not in orders
    assert (
        wh.query(
            "select source_file, reject_reason from staging.order_rejects where order_id = ? "
            "order by source_row",
            [conflict],
        )
        == [(f"orders/{DAYS[2]}.csv", "conflicting_duplicate")] * 2
    )
    superseded = dict(
        wh.query("select order_id, superseded_by_delivery from staging.superseded_orders")
    )
    assert superseded[conflict] == DAYS[2]
    assert superseded[shop.duplicate["order_id"]] == DAYS[1]  # an exact copy is not a reject
    assert superseded[shop.refund_now["order_id"]] == DAYS[2]
    # Customers: the late record flips has_customer_record, the changed one wins.
    late_customer = shop.late_customers[0]["customer_id"]
    assert set(
        r[0]
        for r in wh.query(
            "select has_customer_record from staging.stg_shop__orders where customer_id = ?",
            [late_customer],
        )
    ) == {True}
    changed = shop.changed_customer["customer_id"]
    assert wh.query(
        "select email, has_marketing_consent, source_file from staging.stg_shop__customers "
        "where customer_id = ?",
        [changed],
    ) == [("new.address@example.com", False, f"customers/{DAYS[2]}.parquet")]
    assert wh.scalar("select category from staging.stg_shop__products where product_id = ?", [
        shop.recategorized["product_id"]
    ]) == "gifts"  # fmt: skip
    # Nothing is lost: raw = accepted + rejected + superseded, and history exists.
    for source, accepted, rejected, old in STAGING_SPLITS:
        counts = [
            wh.scalar(f"select count(*) from {table}")
            for table in (f"raw.{source}", f"staging.{accepted}", f"staging.{rejected}",
                          f"staging.{old}" if old else None)
            if table
        ]  # fmt: skip
        assert counts[0] == sum(counts[1:]), source
        if source in ("orders", "customers", "order_items", "products"):
            assert counts[3] > 0, source
    # Late orders count in the features of their day's customer.
    features = dict(
        wh.query(
            "select customer_id, orders_count from marts.customer_features where customer_id in "
            "(select unnest(?))",
            [[o["customer_id"] for o in shop.late]],
        )
    )
    assert all(features[o["customer_id"]] >= 1 for o in shop.late)


@pytest.mark.slow
def test_the_bookkeeping_says_what_each_day_loaded(scenario):
    loads = scenario["loads"]
    orders = {day: next(s for s in loads[day] if s.source == "orders") for day in DAYS}
    assert orders[DAYS[0]].new_files == [f"orders/{DAYS[0]}.csv"]
    assert orders[DAYS[1]].changed_files == [f"orders/{DAYS[0]}.csv"]
    assert orders[DAYS[1]].new_files == [f"orders/{DAYS[1]}.csv"]
    assert orders[DAYS[3]].unchanged_files == [f"orders/{d}.csv" for d in DAYS[:3]]
    assert orders[DAYS[3]].file == "orders/" and orders[DAYS[3]].deliveries == 4
    with duckdb.connect(str(scenario["daily"].path), read_only=True) as con:
        rows = con.execute(
            "select file, delivery, status, rows from raw.deliveries where source = 'orders' "
            "order by file, status"
        ).fetchall()
        per_file = con.execute(
            "select _source_file, _delivery, count(*), count(distinct _file_sha256) "
            "from raw.orders group by all order by 1"
        ).fetchall()
    assert [(f, d, s) for f, d, s, _ in rows] == [
        (f"orders/{DAYS[0]}.csv", DAYS[0], "loaded"),
        (f"orders/{DAYS[0]}.csv", DAYS[0], "replaced"),
        *((f"orders/{day}.csv", day, "loaded") for day in DAYS[1:]),
    ]
    loaded = {f: n for f, _d, s, n in rows if s == "loaded"}
    assert {f: n for f, _d, n, _ in per_file} == loaded  # the table holds what was recorded
    assert {d for _f, d, _n, shas in per_file if shas == 1} == set(DAYS)
