"""Loyalty points: ledger, balances and refused redemptions (``customer_warehouse.loyalty``).

The three tables are written together (``build_loyalty_tables`` swaps them in one transaction),
so they are one multi-asset. Its inputs are dbt tables, declared as deps from the module's own
table constants, so the lineage in the UI is what the code reads. The invariants are blocking
checks (``checks.py``): a ledger that breaks them stops whatever is built on the balances.
"""

import dagster as dg

from customer_warehouse import loyalty
from orchestration.defs.loyalty.checks import LOYALTY_CHECK_SPECS, evaluate_loyalty_checks
from orchestration.defs.metadata import counts_markdown, table_key, table_metadata
from orchestration.defs.resources import (
    LOCK_RETRY,
    WRITER_POOL,
    WarehouseResource,
    fail_fast_on_data_errors,
)

LOYALTY_INPUTS = (
    loyalty.ORDERS_TABLE,
    loyalty.BIRTH_MONTHS_TABLE,
    loyalty.REDEMPTIONS_TABLE,
    loyalty.AS_OF_TABLE,
    loyalty.RULES_TABLE,
    loyalty.LEVELS_TABLE,
)
LOYALTY_OUTPUTS = {
    loyalty.LEDGER_TABLE: "One row per movement of points (earn, redeem, clawback, expire).",
    loyalty.BALANCES_TABLE: "One row per customer: points balance and totals as of the date.",
    loyalty.REJECTS_TABLE: "Refused redemption requests with the reason and the balance then.",
}
#: Customers per batch: bounds memory (a batch's events are in Python at once).
BATCH_SIZE = 50_000


@dg.multi_asset(
    name="loyalty_points",
    specs=[
        dg.AssetSpec(
            key=table_key(table),
            group_name="marts",
            kinds={"python", "duckdb"},
            description=f"`{table}`: {text} Rules: customer_warehouse/loyalty.py and "
            "seeds/loyalty_rules.csv.",
            deps=[table_key(source) for source in LOYALTY_INPUTS],
        )
        for table, text in LOYALTY_OUTPUTS.items()
    ],
    check_specs=LOYALTY_CHECK_SPECS,
    can_subset=False,
    pool=WRITER_POOL,
    retry_policy=LOCK_RETRY,
    description="Rebuild the loyalty ledger and balances from scratch, customers in batches.",
)
def loyalty_points(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    with warehouse.connect() as con:
        with fail_fast_on_data_errors("Building the loyalty points"):
            # as_of_date=None: the date dbt decided (intermediate.int_as_of_date), one rule.
            report = loyalty.build_loyalty_tables(con, as_of_date=None, batch_size=BATCH_SIZE)
        metadata = {
            table: table_metadata(con, table, with_preview=True) for table in LOYALTY_OUTPUTS
        }
        check_results = evaluate_loyalty_checks(con)
    context.log.info(
        f"Loyalty as of {report.as_of_date}: {report.customers:,} customers, "
        f"{report.ledger_rows:,} movements, {report.redemption_rejects:,} refused redemptions."
    )
    common = {
        "as_of_date": dg.MetadataValue.text(report.as_of_date.isoformat()),
        "customers": dg.MetadataValue.int(report.customers),
        "batches": dg.MetadataValue.int(report.batches),
        "points_outstanding": dg.MetadataValue.int(report.points_outstanding),
    }
    extra = {
        loyalty.LEDGER_TABLE: {
            "movements_by_type": dg.MetadataValue.md(
                counts_markdown(report.movement_counts, "movement_type")
            )
        },
        loyalty.REJECTS_TABLE: {
            "rejects_by_reason": dg.MetadataValue.md(
                counts_markdown(report.reject_reasons, "reject_reason")
                if report.reject_reasons
                else "none"
            )
        },
    }
    for table in LOYALTY_OUTPUTS:
        yield dg.MaterializeResult(
            asset_key=table_key(table),
            metadata={**metadata[table], **common, **extra.get(table, {})},
        )
    yield from check_results
