"""The loyalty invariants as blocking asset checks, evaluated on the tables just written.

They restate, in SQL over the stored tables, what ``customer_warehouse.loyalty`` guarantees
and its tests prove: here they guard the tables after every run (a bad input or a bug in a
new window would show here first).

* ``balance_equals_ledger_sum``: every customer's balance is the sum of their entries up to
  the balances' as-of date, and every customer with such entries has a balance row.
* ``no_negative_balance``: the running balance (entries in ``movement_seq`` order) never drops
  below zero and matches the stored ``balance_after``; ``movement_id`` is unique. Checked for
  the customers the last run posted to (their whole history): the ledger is append-only, so
  the other customers' entries are the ones an earlier run checked.
* ``liability_matches_ledger``: every day of ``loyalty_liability_daily`` the last run
  appended holds the sum of the ledger's entries up to the end of that day.
"""

from __future__ import annotations

import dagster as dg
import duckdb

from customer_warehouse import loyalty
from customer_warehouse.warehouse import scalar
from orchestration.defs.metadata import markdown_table, table_key

BALANCES_KEY = table_key(loyalty.BALANCES_TABLE)
LEDGER_KEY = table_key(loyalty.LEDGER_TABLE)
DAILY_KEY = table_key(loyalty.DAILY_TABLE)
EXAMPLES = 5


def _blocking_check(
    name: str, asset: dg.AssetKey, dep: dg.AssetKey, description: str
) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name, asset=asset, additional_deps=[dep], description=description, blocking=True
    )


LOYALTY_CHECK_SPECS = [
    _blocking_check(
        "balance_equals_ledger_sum",
        BALANCES_KEY,
        LEDGER_KEY,
        "points_balance = sum(points) of the customer's entries up to the as-of date.",
    ),
    _blocking_check(
        "no_negative_balance",
        LEDGER_KEY,
        BALANCES_KEY,
        "The running balance never goes below zero and matches balance_after; "
        "movement_id is unique.",
    ),
    _blocking_check(
        "liability_matches_ledger",
        DAILY_KEY,
        LEDGER_KEY,
        "points_outstanding of each posted day = sum(points) of the entries up to it.",
    ),
]

_BALANCE_MISMATCHES = f"""
    with as_of as (
        select max(as_of_date) as as_of_date from {loyalty.BALANCES_TABLE}
    ),
    ledger as (
        select customer_id, sum(points) as ledger_points
        from {loyalty.LEDGER_TABLE}
        where occurred_at < (select as_of_date + interval 1 day from as_of)
        group by customer_id
    )
    select
        coalesce(balances.customer_id, ledger.customer_id) as customer_id,
        balances.points_balance,
        ledger.ledger_points
    from {loyalty.BALANCES_TABLE} as balances
    full outer join ledger on balances.customer_id = ledger.customer_id
    where coalesce(balances.points_balance, 0) <> coalesce(ledger.ledger_points, 0)
        or (balances.customer_id is null)
    order by 1
"""

_NEGATIVE_RUNNING_BALANCES = f"""
    with last_posted as (
        select distinct customer_id from {loyalty.LEDGER_TABLE}
        where posted_as_of = (select max(posted_as_of) from {loyalty.LEDGER_TABLE})
    ),
    running as (
        select
            customer_id,
            movement_id,
            movement_seq,
            balance_after,
            sum(points) over (
                partition by customer_id order by movement_seq
                rows between unbounded preceding and current row
            ) as running_balance,
            count(*) over (partition by movement_id) as copies
        from {loyalty.LEDGER_TABLE}
        where customer_id in (select customer_id from last_posted)
    )
    select customer_id, movement_seq, running_balance, balance_after
    from running
    where running_balance < 0 or running_balance <> balance_after or copies > 1
    union all
    select customer_id, null, points_balance, null
    from {loyalty.BALANCES_TABLE}
    where points_balance < 0
    order by 1, 2
"""

_LIABILITY_MISMATCHES = f"""
    with days as (
        select day, points_outstanding from {loyalty.DAILY_TABLE}
        where posted_as_of = (select max(posted_as_of) from {loyalty.DAILY_TABLE})
    ),
    flows as (
        select cast(occurred_at as date) as day, sum(points) as points
        from {loyalty.LEDGER_TABLE}
        group by 1
    ),
    running as (
        select day, sum(points) over (order by day) as outstanding from flows
    )
    select days.day, days.points_outstanding, coalesce(running.outstanding, 0) as ledger_sum
    from days
    asof left join running on days.day >= running.day
    where days.points_outstanding <> coalesce(running.outstanding, 0)
    order by 1
"""


def _violations(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[int, list[str], list[tuple]]:
    count = int(scalar(con, f"select count(*) from ({sql})"))
    relation = con.sql(f"select * from ({sql}) limit {EXAMPLES}")
    return count, list(relation.columns), relation.fetchall()


def _result(
    name: str, key: dg.AssetKey, count: int, columns: list[str], examples: list[tuple]
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        asset_key=key,
        passed=count == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "violations": dg.MetadataValue.int(count),
            "examples": dg.MetadataValue.md(markdown_table(columns, examples) if count else "none"),
        },
    )


def evaluate_loyalty_checks(con: duckdb.DuckDBPyConnection) -> list[dg.AssetCheckResult]:
    return [
        _result("balance_equals_ledger_sum", BALANCES_KEY, *_violations(con, _BALANCE_MISMATCHES)),
        _result("no_negative_balance", LEDGER_KEY, *_violations(con, _NEGATIVE_RUNNING_BALANCES)),
        _result("liability_matches_ledger", DAILY_KEY, *_violations(con, _LIABILITY_MISMATCHES)),
    ]
