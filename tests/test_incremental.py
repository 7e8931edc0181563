"""Deliveries over time, and incremental models proven equal to a full refresh.

A shop's exports arrive as one file per entity and day (`orders/2025-03-28.csv`, ...). Four
daily deliveries, built from demo data, hold what real deliveries hold: late orders (dated days
before their delivery), exact copies of earlier orders, status changes (completed, then refunded
or cancelled in a later delivery, one refund dated after the day it arrives), corrections (a new
amount), a changed file delivered again under the same name (an order gone, an amount fixed),
conflicting copies of an order inside one delivery, customers who arrive after their orders,
a customer whose consent changes, order lines and a product delivered again.

The warehouse is built day by day as a scheduled run would (load, then `dbt build` with the
as-of date on the delivery day), incrementally; then a fresh warehouse is loaded from the same
folder and built with `dbt build --full-refresh`. Every staging, intermediate and mart relation
must be equal row by row (EXCEPT ALL both ways).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

from customer_warehouse import demo, ingestion
from customer_warehouse.ingestion import deliveries

from .conftest import STAGING_SPLITS, Warehouse, dbt_env

DAYS = ("2025-03-28", "2025-03-29", "2025-03-30", "2025-03-31")
INCREMENTAL_MODELS = (
    "base_shop__orders",
    "base_shop__customers",
    "base_shop__order_items",
    "base_shop__products",
    "base_shop__redemptions",
    "int_orders_aggregated_to_customer_days",
    "int_orders_joined_to_membership_levels",
)
#: Not comparable with a single full refresh by design: derived from the dated tier history,
#: i.e. from the as-of dates run (four here, one there), not from the files alone.
RUN_HISTORY_RELATIONS = {"marts.customer_tier_transitions", "marts.customer_tiers_history"}
#: The dated tier history itself: compared on the dates both warehouses hold (the full
#: refresh ran only the last as-of date).
DATED_RELATIONS = {"marts.customer_tier_history": "as_of_date"}
#: The time of day of the run (macros/tiers/tiers_computed_at.sql).
RUN_TIME_COLUMNS = {"computed_at"}
#: Loads happen seconds apart here, not days: a lookback of 0 days makes every daily run
#: process only what it has not seen, the case that must equal a full refresh. (With the
#: default lookback every delivery of the last days is processed again: more work, same rows.)
NO_LOOKBACK = '{"incremental_lookback_days": 0}'


# --------------------------------------------------------------------------------------------
# The deliveries
# --------------------------------------------------------------------------------------------


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _write(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _write_parquet(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({column: [row[column] or None for row in rows] for column in header})
    pq.write_table(table, path)


def _day(value: str | None) -> str:
    """The date of an ISO timestamp (demo orders: the UTC and the China date agree); '' when the
    value is not one (a dirty row: it comes in the first delivery)."""
    value = value or ""
    return value[:10] if re.match(r"\d{4}-\d{2}-\d{2}", value) else ""


class Shop:
    """The demo exports cut into daily deliveries, with the cases named in the module doc."""

    def __init__(self, demo: Path):
        self.order_header, orders = _read(demo / "orders.csv")
        self.customer_header, self.customers = _read(demo / "customers.csv")
        self.item_header, self.items = _read(demo / "order_items.csv")
        self.product_header, self.products = _read(demo / "products.csv")
        self.redemption_header, self.redemptions = _read(demo / "redemptions.csv")
        self.surveys = demo / "surveys"
        self.orders = orders
        first = DAYS[0]
        with (demo / "truth" / "dirty_orders.csv").open(newline="") as handle:
            dirty = {int(row["row_number"]) for row in csv.DictReader(handle)}
        ids = [o["order_id"] for o in orders]
        clean = [
            o
            for number, o in enumerate(orders, start=1)
            if number not in dirty
            and o["order_id"]
            and ids.count(o["order_id"]) == 1
            and o["status"] == "completed"
        ]
        early = [o for o in clean if _day(o["ordered_at"]) < "2025-03-20"]
        assert len(early) > 30 and dirty, "demo too small for the scenario"
        # Orders of the first days held back: they arrive late, days after their date.
        self.late = [o for o in clean if "2025-03-25" <= _day(o["ordered_at"]) <= "2025-03-27"][:2]
        self.very_late = [o for o in clean if _day(o["ordered_at"]) == "2025-03-24"][:1]
        assert self.late and self.very_late, "no orders to deliver late"
        picks = iter(early[::-1])
        self.vanish, self.fix, self.duplicate, self.refund_later = (next(picks) for _ in range(4))
        self.correction, self.conflict, self.refund_now = (next(picks) for _ in range(3))
        held = {o["order_id"] for o in self.late + self.very_late}
        self.day_orders = {
            day: [o for o in orders if _in_delivery(o, day) and o["order_id"] not in held]
            for day in DAYS
        }
        assert len(self.day_orders[DAYS[2]]) >= 1 and len(self.day_orders[DAYS[1]]) >= 2
        self.cancel = self.day_orders[DAYS[1]][0]  # delivered on day 2, cancelled on day 3
        self.refund_day3 = self.day_orders[DAYS[2]][0]  # delivered on day 3, refunded on day 4
        # Customers with orders in the first delivery whose record only comes on day 2.
        buyers = {o["customer_id"] for o in self.day_orders[first]}
        self.late_customers = [c for c in self.customers if c["customer_id"] in buyers][-2:]
        consenting = [c for c in self.customers if c["marketing_consent"] == "true"]
        self.changed_customer = consenting[0]
        self.relined_order = next(
            o for o in early if any(i["order_id"] == o["order_id"] for i in self.items)
        )
        self.recategorized = self.products[0]

    def orders_of(self, day: str) -> list[dict[str, str]]:
        return self.day_orders[day]

    def items_of(self, orders: list[dict[str, str]]) -> list[dict[str, str]]:
        ids = {o["order_id"] for o in orders}
        return [i for i in self.items if i["order_id"] in ids]

    def deliver(self, raw: Path, day: str) -> None:
        """Write the files of one delivery day into `raw` (and rewrite an earlier one)."""
        h = self.order_header
        orders = list(self.orders_of(day))
        items = self.items_of(orders)
        if day == DAYS[0]:
            _write(raw / "orders" / f"{day}.csv", h, orders)
            late_ids = {c["customer_id"] for c in self.late_customers}
            customers = [c for c in self.customers if c["customer_id"] not in late_ids]
            _write(raw / "customers" / f"{day}.csv", self.customer_header, customers)
            _write(raw / "order_items" / f"{day}.csv", self.item_header, items)
            _write(raw / "products" / f"{day}.csv", self.product_header, self.products)
            redemptions = [r for r in self.redemptions if _day(r["redeemed_at"]) <= day]
            _write(raw / "redemptions" / f"{day}.csv", self.redemption_header, redemptions)
            shutil.copytree(self.surveys, raw / "surveys")
            return
        if day == DAYS[1]:
            # The first delivery again, changed, under the same name: one order is gone, one
            # has another amount.
            first = [o for o in self.orders_of(DAYS[0]) if o is not self.vanish]
            first = [_with(o, amount=_plus(o["amount"], 5)) if o is self.fix else o for o in first]
            _write(raw / "orders" / f"{DAYS[0]}.csv", h, first)
            orders += [
                dict(self.duplicate),  # an exact copy of an order delivered before
                _with(  # refunded, effective on the next day (after this run's as-of date)
                    self.refund_later,
                    status="refunded",
                    status_changed_at="2025-03-30T12:00:00+08:00",
                ),
            ]
            _write(raw / "customers" / f"{day}.csv", self.customer_header, self.late_customers)
        if day == DAYS[2]:
            conflicting = [
                _with(self.conflict, amount=_plus(self.conflict["amount"], 1)),
                _with(self.conflict, amount=_plus(self.conflict["amount"], 2)),
            ]
            orders += [
                *self.late,  # dated three to five days before this delivery
                _with(self.correction, amount=_plus(self.correction["amount"], 10)),
                _with(self.cancel, status="cancelled", status_changed_at="2025-03-30T15:00:00Z"),
                _with(self.refund_now, status="refunded", status_changed_at="2025-03-30 10:00:00"),
                *conflicting,  # two different copies in one delivery: both quarantined
                dict(orders[0]),  # an exact copy inside the delivery
            ]
            items += self.items_of(self.late)
            relined = self.items_of([self.relined_order])
            items += [_with(i, quantity=str(int(i["quantity"]) + 1)) for i in relined]
            changed = _with(
                self.changed_customer, marketing_consent="false", email="new.address@example.com"
            )
            _write_parquet(raw / "customers" / f"{day}.parquet", self.customer_header, [changed])
        if day == DAYS[3]:
            orders += [
                *self.very_late,  # a week late
                _with(self.refund_day3, status="refunded", status_changed_at="2025-03-31 09:00:00"),
                # the cancellation of day 3 delivered again, identical
                _with(self.cancel, status="cancelled", status_changed_at="2025-03-30T15:00:00Z"),
            ]
            items += self.items_of(self.very_late)
            product = _with(self.recategorized, category="gifts")
            _write(raw / "products" / f"{day}.csv", self.product_header, [product])
        redemptions = [r for r in self.redemptions if _day(r["redeemed_at"]) == day]
        if redemptions:
            _write(raw / "redemptions" / f"{day}.csv", self.redemption_header, redemptions)
        _write(raw / "orders" / f"{day}.csv", h, orders)
        _write(raw / "order_items" / f"{day}.csv", self.item_header, items)


def _in_delivery(order: dict[str, str], day: str) -> bool:
    """Orders come in the delivery of their date; everything up to the first day, and a dirty
    row without a readable date or with one after the last day, in the first delivery."""
    date = _day(order["ordered_at"])
    if day == DAYS[0]:
        return date <= DAYS[0] or date > DAYS[-1]
    return date == day


def _with(row: dict[str, str], **values: str) -> dict[str, str]:
    return {**row, **values}


def _plus(amount: str, extra: int) -> str:
    return f"{float(amount) + extra:.2f}"


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _load(raw: Path, path: Path) -> list[ingestion.LoadedSource]:
    with duckdb.connect(str(path)) as con:
        loaded = ingestion.load_raw(con, raw, log=lambda _line: None, encodings={})
        ingestion.ensure_survey_tables(con)
        from customer_warehouse.ingestion import surveys

        surveys.ingest_surveys(con, raw / "surveys")
    return loaded


class InProcessDbt:
    """dbt in this process, the project parsed once: a dbt start costs seconds of CPU (imports,
    parsing) that five builds need not pay five times. The warehouse, raw folder and as-of
    date come from the environment of each build, as in a scheduled run."""

    def __init__(self, work: Path):
        from dbt.cli.main import dbtRunner

        self.work = work
        self.runner = dbtRunner
        # The manifest names the database as the file's stem: every warehouse here is one
        # `warehouse.duckdb`, in its own folder.
        with self._environment(work / "warehouse.duckdb", work, ""):
            parsed = dbtRunner().invoke(["parse", "--quiet", "--vars", NO_LOOKBACK])
        assert parsed.success, parsed.exception
        self.manifest = parsed.result

    @contextmanager
    def _environment(self, warehouse: Path, raw: Path, as_of: str) -> Iterator[None]:
        with pytest.MonkeyPatch.context() as patch:
            for name in list(os.environ):
                if name.startswith(("CW_", "DBT_")):
                    patch.delenv(name)
            for name, value in dbt_env(warehouse, self.work, raw, CW_AS_OF_DATE=as_of).items():
                patch.setenv(name, value)
            yield

    def build(self, warehouse: Path, raw: Path, as_of: str, *extra: str, tests: bool):
        """`dbt build` (data tests only when `tests`: the daily ones run on the last day, on
        the state that is compared); returns dbt's log messages and the node results."""
        messages: list[str] = []
        excluded = ["unit_test"] if tests else ["unit_test", "test"]
        args = ["build", "--exclude-resource-type", *excluded, "--vars", NO_LOOKBACK, *extra]
        with self._environment(warehouse, raw, as_of):
            result = self.runner(
                manifest=self.manifest,
                callbacks=[lambda event: messages.append(str(event.info.msg))],
            ).invoke(args)
        _release_dbt_duckdb()
        failed = [
            f"{r.node.name}: {r.message}"
            for r in getattr(result.result, "results", None) or []
            if str(r.status).lower() in ("error", "fail")
        ]
        assert result.success, failed or result.exception
        return "\n".join(messages), list(result.result.results)


def _batch_sizes(warehouse: Path, results: list) -> dict[str, tuple[int, int]]:
    """{model: (rows its SQL selected in this run, rows in the table)} of the incremental
    models: the SQL dbt ran (filtered or not), counted again right after the run."""
    sizes = {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for result in results:
            if result.node.name in INCREMENTAL_MODELS:
                relation = result.node.relation_name
                selected = con.execute(f"select count(*) from ({result.node.compiled_code})")
                sizes[result.node.name] = (
                    selected.fetchone()[0],
                    con.execute(f"select count(*) from {relation}").fetchone()[0],
                )
    return sizes


def _release_dbt_duckdb() -> None:
    """dbt-duckdb keeps its DuckDB instance open across in-process runs; close it, as the end of
    a dbt process would, so the warehouse file can be opened (and attached) freely."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    if DuckDBConnectionManager._ENV is not None:
        DuckDBConnectionManager._ENV.close()
    DuckDBConnectionManager.close_all_connections()


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


def _relations(con: duckdb.DuckDBPyConnection, database: str) -> list[str]:
    return [
        f"{schema}.{name}"
        for schema, name in con.execute(
            "select schema_name, table_name from duckdb_tables() where database_name = ? "
            "and schema_name in ('staging', 'intermediate', 'marts') "
            "union select schema_name, view_name from duckdb_views() where database_name = ? "
            "and schema_name in ('staging', 'intermediate', 'marts') order by 1, 2",
            [database, database],
        ).fetchall()
    ]


def _differences(left: Path, right: Path) -> tuple[list[str], dict[str, tuple[int, int, int]]]:
    """Relations compared, and those that differ: {relation: (rows, only left, only right)}."""
    with duckdb.connect() as con:
        con.execute(f"attach '{left}' as l (read_only)")
        con.execute(f"attach '{right}' as r (read_only)")
        relations = _relations(con, "l")
        assert relations == _relations(con, "r")
        differ = {}
        for relation in relations:
            if relation in RUN_HISTORY_RELATIONS:
                continue
            schema, name = relation.split(".")
            columns = ", ".join(
                f'"{column}"'
                for (column,) in con.execute(
                    "select column_name from duckdb_columns() where database_name = 'l' "
                    "and schema_name = ? and table_name = ? order by column_index",
                    [schema, name],
                ).fetchall()
                if column not in RUN_TIME_COLUMNS
            )

            where = "true"
            if relation in DATED_RELATIONS:
                date = DATED_RELATIONS[relation]
                where = (
                    f"{date} in (select {date} from r.{relation} "
                    f"intersect select {date} from l.{relation})"
                )

            def only(a: str, b: str, relation=relation, columns=columns, where=where) -> int:
                return con.execute(
                    f"select count(*) from (select {columns} from {a}.{relation} where {where} "
                    f"except all select {columns} from {b}.{relation} where {where})"
                ).fetchone()[0]

            rows = con.execute(f"select count(*) from l.{relation} where {where}").fetchone()[0]
            if relation in DATED_RELATIONS:
                assert rows > 0, relation  # the dates in common hold rows
            left_only, right_only = only("l", "r"), only("r", "l")
            if left_only or right_only:
                differ[relation] = (rows, left_only, right_only)
    return relations, differ


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
    orders = {
        row[0]: row[1:]
        for row in wh.query(
            "select order_id, status, cast(status_changed_at as varchar), amount, source_file "
            "from staging.stg_shop__orders"
        )
    }
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


# --------------------------------------------------------------------------------------------
# The loader on its own (fast)
# --------------------------------------------------------------------------------------------

ORDERS = "order_id,customer_id,ordered_at,amount,status,status_changed_at\n"


def _orders(raw: Path, name: str, *rows: str) -> Path:
    path = raw / "orders" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ORDERS + "".join(f"{row}\n" for row in rows))
    return path


def _raw_load(raw: Path, db: Path, log: Callable[[str], None] | None = None):
    with duckdb.connect(str(db)) as con:
        return {
            s.source: s
            for s in ingestion.load_raw(
                con, raw, log=log or (lambda _line: None), encodings={}, erasures=[]
            )
        }


def _table(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_loading_the_same_folder_twice_reads_nothing_and_adds_nothing(tmp_path, monkeypatch):
    raw, db = tmp_path / "raw", tmp_path / "w.duckdb"
    _orders(raw, "2025-01-01.csv", "A1,c1,2025-01-01,10,,", "A2,c2,2025-01-01,20,,")
    _orders(raw, "2025-01-02.parquet.tmp")  # not a delivery: ignored
    said: list[str] = []
    first = _raw_load(raw, db, said.append)["orders"]
    assert first.new_files == ["orders/2025-01-01.csv"] and first.rows == 2
    assert any("2025-01-02.parquet.tmp: not a .csv or .parquet delivery" in s for s in said)
    before = _table(db, "select * from raw.orders order by all")
    bookkeeping = _table(db, "select * from raw.deliveries order by all")
    # The file was hashed when it was fresh; once it is old, size and time decide alone.
    (raw / "orders" / "2025-01-01.csv").touch()
    _raw_load(raw, db)
    stat = (raw / "orders" / "2025-01-01.csv").stat()
    with duckdb.connect(str(db)) as con:  # as if loaded long after it was written
        con.execute("update raw.deliveries set verified_at = verified_at + interval 1 hour")
    bookkeeping = _table(db, "select * from raw.deliveries order by all")
    hashed: list[Path] = []
    real_hash = ingestion.file_sha256
    monkeypatch.setattr(deliveries, "file_sha256", lambda p: hashed.append(p) or real_hash(p))
    again = _raw_load(raw, db)["orders"]
    assert hashed == []  # not even read
    assert again.unchanged_files == ["orders/2025-01-01.csv"] and again.new_files == []
    assert _table(db, "select * from raw.orders order by all") == before
    assert _table(db, "select * from raw.deliveries order by all") == bookkeeping
    assert (raw / "orders" / "2025-01-01.csv").stat().st_mtime_ns == stat.st_mtime_ns


def test_a_changed_file_replaces_its_own_rows_and_a_gone_file_takes_them_out(tmp_path):
    raw, db = tmp_path / "raw", tmp_path / "w.duckdb"
    _orders(raw, "2025-01-01.csv", "A1,c1,2025-01-01,10,,", "A2,c2,2025-01-01,20,,")
    _orders(raw, "2025-01-02.csv", "A3,c3,2025-01-02,30,,")
    _raw_load(raw, db)
    changed = _orders(raw, "2025-01-01.csv", "A1,c1,2025-01-01,10,refunded,2025-01-02 08:00:00")
    result = _raw_load(raw, db)["orders"]
    assert result.changed_files == ["orders/2025-01-01.csv"]
    assert result.unchanged_files == ["orders/2025-01-02.csv"]
    sql = "select order_id, status, _source_file, _delivery from raw.orders order by 1"
    assert _table(db, sql) == [
        ("A1", "refunded", "orders/2025-01-01.csv", "2025-01-01"),
        ("A3", None, "orders/2025-01-02.csv", "2025-01-02"),
    ]  # fmt: skip
    (raw / "orders" / "2025-01-02.csv").unlink()
    assert _raw_load(raw, db)["orders"].removed_files == ["orders/2025-01-02.csv"]
    assert _table(db, "select order_id from raw.orders") == [("A1",)]
    assert _table(
        db, "select file, status, rows, status_changed_at is not null from raw.deliveries "
        "order by file, loaded_at"
    ) == [
        ("orders/2025-01-01.csv", "replaced", 2, True),
        ("orders/2025-01-01.csv", "loaded", 1, False),
        ("orders/2025-01-02.csv", "removed", 1, True),
    ]  # fmt: skip
    # Going back to the first content loads it again (its old record is replaced).
    changed.write_text(ORDERS + "A1,c1,2025-01-01,10,,\nA2,c2,2025-01-01,20,,\n")
    assert _raw_load(raw, db)["orders"].changed_files == ["orders/2025-01-01.csv"]
    assert _table(db, "select count(*), count(distinct file_sha256) from raw.deliveries") == [
        (3, 3)
    ]


def test_a_broken_delivery_changes_nothing_and_is_named_with_its_folder(tmp_path):
    raw, db = tmp_path / "raw", tmp_path / "w.duckdb"
    _orders(raw, "2025-01-01.csv", "A1,c1,2025-01-01,10,,")
    _raw_load(raw, db)
    before = _table(db, "select * from raw.deliveries order by all")
    _orders(raw, "2025-01-02.csv", "A2,c2,2025-01-02,20,,")
    (raw / "orders" / "2025-01-03.csv").write_text("order_id,amount\nA3,1\n")
    with pytest.raises(ingestion.RawDataError, match=r"^orders/2025-01-03.csv: missing required"):
        _raw_load(raw, db)
    assert _table(db, "select * from raw.deliveries order by all") == before
    assert _table(db, "select order_id from raw.orders") == [("A1",)]


def test_a_full_export_and_a_delivery_folder_together_are_refused(tmp_path):
    raw, db = tmp_path / "raw", tmp_path / "w.duckdb"
    _orders(raw, "2025-01-01.csv", "A1,c1,2025-01-01,10,,")
    (raw / "orders.csv").write_text(ORDERS)
    with pytest.raises(ingestion.RawDataError) as error:
        _raw_load(raw, db)
    message = str(error.value)
    assert "both orders.csv and the folder orders/" in message
    assert "move it into orders/" in message and "orders/0000-00-00.csv" in message
    (raw / "orders.csv").unlink()
    (raw / "orders" / "2025-01-01.parquet").write_bytes(b"PAR1")
    with pytest.raises(ingestion.RawDataError, match="both 2025-01-01.csv and 2025-01-01.parquet"):
        _raw_load(raw, db)
    shutil.rmtree(raw / "orders")
    (raw / "orders").mkdir()
    with pytest.raises(ingestion.RawDataError, match="holds no delivery"):
        _raw_load(raw, db)


def test_switching_from_a_full_export_to_deliveries_keeps_nothing_twice(tmp_path):
    raw, db = tmp_path / "raw", tmp_path / "w.duckdb"
    raw.mkdir()
    (raw / "orders.csv").write_text(ORDERS + "A1,c1,2025-01-01,10,,\n")
    assert _raw_load(raw, db)["orders"].file == "orders.csv"
    assert _table(db, "select _source_file, _delivery from raw.orders") == [
        ("orders.csv", "orders")
    ]
    (raw / "orders.csv").rename(tmp_path / "kept.csv")
    _orders(raw, "0000-00-00.csv", "A1,c1,2025-01-01,10,,")
    result = _raw_load(raw, db)["orders"]
    assert (result.removed_files, result.new_files) == (["orders.csv"], ["orders/0000-00-00.csv"])
    assert _table(db, "select order_id, _source_file from raw.orders") == [
        ("A1", "orders/0000-00-00.csv")
    ]


def test_an_erasure_request_blanks_rows_loaded_before_it(tmp_path):
    from customer_warehouse import privacy

    raw, db = tmp_path / "raw", tmp_path / "w.duckdb"
    _orders(raw, "2025-01-01.csv", "A1,c1,2025-01-01,10,,")
    (raw / "customers").mkdir()
    (raw / "customers" / "2025-01-01.csv").write_text(
        "customer_id,email,full_name\nc1,a@x.cn,Ann\nc2,b@x.cn,Bo\n"
    )
    _raw_load(raw, db)
    with duckdb.connect(str(db)) as con:
        ingestion.load_raw(
            con, raw, log=lambda _: None, encodings={}, erasures=[privacy.ErasureRequest("c1")]
        )
    assert _table(db, "select customer_id, email, full_name from raw.customers order by 1") == [
        ("c1", None, None),
        ("c2", "b@x.cn", "Bo"),
    ]
    # The request stays in force without its file: a later delivery cannot bring values back.
    (raw / "customers" / "2025-01-02.csv").write_text("customer_id,email\nc1,again@x.cn\n")
    _raw_load(raw, db)
    assert _table(db, "select count(*) from raw.customers where email = 'again@x.cn'") == [(0,)]
