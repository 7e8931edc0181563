"""A DuckDB warehouse holding only what the loyalty ledger reads (the seeds and the upstream
tables in their contract's types), filled from CustomerEvents; and the ledger's tables read
back as the reference's row types, per customer."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa

from customer_warehouse import loyalty
from customer_warehouse.loyalty import LoyaltyRules

from .loyalty_reference import (
    BalanceRow,
    CustomerEvents,
    LedgerResult,
    LedgerRow,
    RedemptionReject,
)

SEEDS_DIR = Path(__file__).resolve().parents[1] / "seeds"
NO_BIRTH_ROW = "3"  # customers whose id ends so get no int_customer_birth_months row


def load_seeds(con: duckdb.DuckDBPyConnection) -> None:
    """What `dbt seed` produces for the two loyalty seeds (types as in dbt_project.yml)."""
    con.execute("create schema if not exists seeds")
    con.execute(
        "create or replace table seeds.loyalty_rules as select rule, "
        "cast(value as decimal(18, 6)) as value, description from read_csv(?, header = true)",
        [str(SEEDS_DIR / "loyalty_rules.csv")],
    )
    con.execute(
        "create or replace table seeds.loyalty_level_multipliers as select membership_level, "
        "cast(multiplier as decimal(9, 4)) as multiplier from read_csv(?, header = true)",
        [str(SEEDS_DIR / "loyalty_level_multipliers.csv")],
    )


def create_inputs(
    con: duckdb.DuckDBPyConnection, as_of: date | None = None, aware: bool = False
) -> None:
    """Empty upstream tables (``aware``: the order and redemption times as TIMESTAMPTZ)."""
    stamp = "timestamptz" if aware else "timestamp"
    for schema in ("intermediate", "staging"):
        con.execute(f"create schema if not exists {schema}")
    con.execute(
        f"""
        create or replace table intermediate.int_orders_joined_to_membership_levels (
            order_id varchar, customer_id varchar, ordered_at {stamp},
            status_changed_at {stamp}, amount decimal(18, 2), status varchar,
            membership_level_at_order varchar
        )
        """
    )
    con.execute(
        "create or replace table intermediate.int_customer_birth_months "
        "(customer_id varchar, birth_month integer)"
    )
    con.execute(
        f"""
        create or replace table staging.stg_shop__redemptions (
            redemption_id varchar, customer_id varchar, redeemed_at {stamp},
            redeemed_date date, points double, source_file varchar, source_row bigint
        )
        """
    )
    con.execute(
        """
        create or replace table staging.stg_shop__point_adjustments (
            adjustment_id varchar, customer_id varchar, adjusted_at timestamp,
            adjusted_date date, points bigint, reason varchar, source_file varchar,
            source_row bigint
        )
        """
    )
    con.execute(
        "create or replace table intermediate.int_as_of_date "
        "(as_of_date date, as_of_date_source varchar, last_order_date date)"
    )
    if as_of is not None:
        con.execute(
            "insert into intermediate.int_as_of_date values (?, 'requested', null)", [as_of]
        )


def _decimal_or_none(value: object) -> Decimal | None:
    """Amounts as the staging contract holds them: decimal(18, 2) (a float via its repr)."""
    if value is None:
        return None
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))


def _stamp(value: datetime | None, aware: bool) -> datetime | None:
    if value is None or not aware:
        return value
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def insert_events(
    con: duckdb.DuckDBPyConnection, customers: Iterable[CustomerEvents], aware: bool = False
) -> None:
    """Add the customers' orders, redemptions, adjustments and birth months."""
    customers = list(customers)
    tables = {
        "orders_in": _orders_table(customers, aware),
        "redemptions_in": _redemptions_table(customers, aware),
        "adjustments_in": _adjustments_table(customers),
        "births_in": _births_table(customers),
    }
    for name, table in tables.items():
        con.register(name, table)
    try:
        con.execute(
            "insert into intermediate.int_orders_joined_to_membership_levels by name "
            "select * from orders_in"
        )
        con.execute(
            "insert into staging.stg_shop__redemptions by name select *, "
            "cast(redeemed_at as date) as redeemed_date, 'redemptions.csv' as source_file, "
            "row_number() over () as source_row from redemptions_in"
        )
        con.execute(
            "insert into staging.stg_shop__point_adjustments by name select *, "
            "cast(adjusted_at as date) as adjusted_date, 'point_adjustments.csv' as source_file, "
            "row_number() over () as source_row from adjustments_in"
        )
        con.execute("insert into intermediate.int_customer_birth_months select * from births_in")
    finally:
        for name in tables:
            con.unregister(name)


def _stamp_type(aware: bool) -> pa.DataType:
    return pa.timestamp("us", tz="UTC") if aware else pa.timestamp("us")


def _orders_table(customers: list[CustomerEvents], aware: bool) -> pa.Table:
    orders = [(c.customer_id, o) for c in customers for o in c.orders]
    stamp = _stamp_type(aware)
    return pa.table(
        {
            "order_id": pa.array([o.order_id for _, o in orders], pa.string()),
            "customer_id": pa.array([c for c, _ in orders], pa.string()),
            "ordered_at": pa.array([_stamp(o.ordered_at, aware) for _, o in orders], stamp),
            "status_changed_at": pa.array(
                [_stamp(o.status_changed_at, aware) for _, o in orders], stamp
            ),
            "amount": pa.array(
                [_decimal_or_none(o.amount) for _, o in orders], pa.decimal128(18, 2)
            ),
            "status": pa.array([o.status for _, o in orders], pa.string()),
            "membership_level_at_order": pa.array(
                [o.membership_level_at_order for _, o in orders], pa.string()
            ),
        }
    )


def _redemptions_table(customers: list[CustomerEvents], aware: bool) -> pa.Table:
    redemptions = [(c.customer_id, r) for c in customers for r in c.redemptions]
    return pa.table(
        {
            "redemption_id": pa.array([r.redemption_id for _, r in redemptions], pa.string()),
            "customer_id": pa.array([c for c, _ in redemptions], pa.string()),
            "redeemed_at": pa.array(
                [_stamp(r.redeemed_at, aware) for _, r in redemptions], _stamp_type(aware)
            ),
            "points": pa.array(
                [None if r.points is None else float(r.points) for _, r in redemptions],
                pa.float64(),
            ),
        }
    )


def _adjustments_table(customers: list[CustomerEvents]) -> pa.Table:
    adjustments = [(c.customer_id, a) for c in customers for a in c.adjustments]
    return pa.table(
        {
            "adjustment_id": pa.array([a.adjustment_id for _, a in adjustments], pa.string()),
            "customer_id": pa.array([c for c, _ in adjustments], pa.string()),
            "adjusted_at": pa.array([a.adjusted_at for _, a in adjustments], pa.timestamp("us")),
            "points": pa.array([a.points for _, a in adjustments], pa.int64()),
            "reason": pa.array([a.reason for _, a in adjustments], pa.string()),
        }
    )


def _births_table(customers: list[CustomerEvents]) -> pa.Table:
    known = [c for c in customers if not c.customer_id.endswith(NO_BIRTH_ROW)]
    return pa.table(
        {
            "customer_id": pa.array([c.customer_id for c in known], pa.string()),
            "birth_month": pa.array([c.birth_month for c in known], pa.int32()),
        }
    )


def make_warehouse(
    con: duckdb.DuckDBPyConnection,
    customers: Iterable[CustomerEvents],
    as_of: date | None = None,
    aware: bool = False,
) -> None:
    load_seeds(con)
    create_inputs(con, as_of, aware=aware)
    insert_events(con, customers, aware=aware)


LEDGER_ORDER = "order by customer_id, movement_seq"


def read_results(con: duckdb.DuckDBPyConnection) -> dict[str, LedgerResult]:
    """The ledger, rejects and balances per customer, as the reference's row types."""
    fields = ", ".join(LedgerRow._fields)
    ledger: dict[str, list[LedgerRow]] = defaultdict(list)
    for row in con.execute(
        f"select {fields} from {loyalty.LEDGER_TABLE} {LEDGER_ORDER}"
    ).fetchall():
        ledger[row[1]].append(LedgerRow(*row))
    rejects: dict[str, list[RedemptionReject]] = defaultdict(list)
    for row in con.execute(
        f"select {', '.join(RedemptionReject._fields)} from {loyalty.REJECTS_TABLE} "
        "order by customer_id, decided_at, redeemed_at, redemption_id, reject_reason"
    ).fetchall():
        rejects[row[1]].append(RedemptionReject(*row))
    columns = [
        "points_expiring_soon" if name == "points_expiring_next_30d" else name
        for name in BalanceRow._fields
    ]
    balances = {
        row[0]: BalanceRow(*row)
        for row in con.execute(
            f"select {', '.join(columns)} from {loyalty.BALANCES_TABLE} order by customer_id"
        ).fetchall()
    }
    return {
        customer: LedgerResult(ledger.get(customer, []), rejects.get(customer, []), balance)
        for customer, balance in balances.items()
    }


def run_engine(
    customers: Iterable[CustomerEvents],
    rules: LoyaltyRules,
    as_of: date,
    aware: bool = False,
) -> dict[str, LedgerResult]:
    """The set-based ledger of these customers, posted in one run as of ``as_of``."""
    with duckdb.connect() as con:
        make_warehouse(con, customers, aware=aware)
        loyalty.rebuild_ledger(con, as_of, rules)
        return read_results(con)
