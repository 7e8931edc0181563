"""The loyalty invariants as blocking asset checks, evaluated on the tables just written.

They restate, in SQL over the stored tables, what ``customer_warehouse.loyalty`` guarantees
and its unit tests prove on single customers: here they guard the whole table after every run
(a batching bug or a bad input would show here first).

* ``balance_equals_ledger_sum``: every customer's balance is the sum of their movements, and
  every customer with movements has a balance row.
* ``no_negative_balance``: the running balance (movements in ``movement_seq`` order) never
  drops below zero and matches the stored ``balance_after``; no balance is negative.
"""

from __future__ import annotations

import dagster as dg
import duckdb

from customer_warehouse import loyalty
from orchestration.defs.metadata import markdown_table, scalar, table_key

BALANCES_KEY = table_key(loyalty.BALANCES_TABLE)
LEDGER_KEY = table_key(loyalty.LEDGER_TABLE)
EXAMPLES = 5

LOYALTY_CHECK_SPECS = [
    dg.AssetCheckSpec(
        "balance_equals_ledger_sum",
        asset=BALANCES_KEY,
        additional_deps=[LEDGER_KEY],
        description="points_balance = sum(points) of the customer's ledger movements.",
        blocking=True,
    ),
    dg.AssetCheckSpec(
        "no_negative_balance",
        asset=LEDGER_KEY,
        additional_deps=[BALANCES_KEY],
        description="The running balance never goes below zero and matches balance_after.",
        blocking=True,
    ),
]

_BALANCE_MISMATCHES = f"""
    with ledger as (
        select customer_id, sum(points) as ledger_points
        from {loyalty.LEDGER_TABLE}
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
    with running as (
        select
            customer_id,
            movement_seq,
            balance_after,
            sum(points) over (
                partition by customer_id order by movement_seq
                rows between unbounded preceding and current row
            ) as running_balance
        from {loyalty.LEDGER_TABLE}
    )
    select customer_id, movement_seq, running_balance, balance_after
    from running
    where running_balance < 0 or running_balance <> balance_after
    union all
    select customer_id, null, points_balance, null
    from {loyalty.BALANCES_TABLE}
    where points_balance < 0
    order by 1, 2
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
    ]
