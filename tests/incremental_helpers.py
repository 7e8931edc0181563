"""The deliveries of tests/test_incremental.py (a demo shop's exports as one file per entity and
day), building them day by day with dbt in-process, and comparing two warehouses relation by
relation."""

from __future__ import annotations

import csv
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

from customer_warehouse import ingestion

from .conftest import dbt_env

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
