"""Helpers of the ledger-across-runs tests (tests/test_loyalty_ledger*.py): the rules with pending
days and a point value, and readers of the posted tables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from decimal import Decimal

import duckdb

from customer_warehouse import loyalty
from customer_warehouse.loyalty import LoyaltyRules, post_ledger

from .loyalty_helpers import ts
from .loyalty_reference import CustomerEvents
from .loyalty_warehouse import make_warehouse

MULTIPLIERS = {"ordinary": 1, "silver": 1.25, "gold": 1.5, "platinum": 2}
RULES = LoyaltyRules(
    base_points_per_currency_unit=Decimal(1),
    birthday_month_multiplier=Decimal(2),
    points_expiry_months=12,
    level_multipliers=MULTIPLIERS,
    pending_days=14,
    expiring_soon_days=30,
    point_value=Decimal("0.01"),
)
WITHOUT_POSTING_RUN = "* exclude (posted_as_of)"


def posted(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    """The append-only tables without the column that names the run (and the balances)."""
    return {
        table: con.execute(f"select {WITHOUT_POSTING_RUN} from {table} order by all").fetchall()
        for table in (loyalty.LEDGER_TABLE, loyalty.REJECTS_TABLE, loyalty.DAILY_TABLE)
    } | {
        "balances": con.execute(
            f"select * from {loyalty.BALANCES_TABLE} order by customer_id"
        ).fetchall()
    }


def entries(con: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    """Every ledger row, whole (every column), by movement_id."""
    relation = con.sql(f"select * from {loyalty.LEDGER_TABLE}")
    columns = relation.columns
    return {row[0]: dict(zip(columns, row, strict=True)) for row in relation.fetchall()}


def balance_on(con: duckdb.DuckDBPyConnection, customer_id: str, day: date) -> int:
    return con.execute(
        f"select coalesce(sum(points), 0) from {loyalty.LEDGER_TABLE} "
        "where customer_id = ? and occurred_at < ?",
        [customer_id, day + timedelta(days=1)],
    ).fetchone()[0]


def set_status(con, order_id: str, status: str, changed: str) -> None:
    con.execute(
        "update intermediate.int_orders_joined_to_membership_levels "
        "set status = ?, status_changed_at = ? where order_id = ?",
        [status, ts(changed), order_id],
    )


@contextmanager
def posted_once(
    customer: CustomerEvents, as_of: date, rules: LoyaltyRules = RULES
) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory warehouse holding one customer's events, posted once as of `as_of`."""
    with duckdb.connect() as con:
        make_warehouse(con, [customer])
        post_ledger(con, as_of, rules)
        yield con
