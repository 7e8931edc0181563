"""Loyalty points: the append-only ledger and what is derived from it (customer_warehouse.loyalty).

One run posts the entries of the days since the last posted as-of date and rebuilds the
balances as of the warehouse's as-of date, all in one transaction, so the four tables are one
multi-asset. Its inputs are dbt tables, declared as deps from the module's own table
constants, so the lineage in the UI is what the code reads. The invariants are blocking checks
(``checks.py``): a ledger that breaks them stops whatever is built on the balances.
"""

import dagster as dg

from customer_warehouse import loyalty
from customer_warehouse.warehouse import AS_OF_TABLE
from orchestration.defs.loyalty.checks import LOYALTY_CHECK_SPECS, evaluate_loyalty_checks
from orchestration.defs.metadata import counts_markdown, table_key, table_metadata
from orchestration.defs.resources import (
    WRITES_WAREHOUSE,
    WarehouseResource,
    fail_fast_on_data_errors,
)

LOYALTY_INPUTS = (
    loyalty.ORDERS_TABLE,
    loyalty.BIRTH_MONTHS_TABLE,
    loyalty.REDEMPTIONS_TABLE,
    loyalty.ADJUSTMENTS_TABLE,
    AS_OF_TABLE,
    loyalty.LEVEL_GAPS_TABLE,
    loyalty.RULES_TABLE,
    loyalty.LEVELS_TABLE,
)
LOYALTY_OUTPUTS = {
    loyalty.LEDGER_TABLE: "Append-only: one row per dated movement of points (earn, redeem, "
    "clawback, expire, adjust), keyed by its event; past rows are never changed.",
    loyalty.BALANCES_TABLE: "One row per customer as of the as-of date: balance, available and "
    "pending points, points expiring soon, what the level still needs.",
    loyalty.REJECTS_TABLE: "Append-only: refused redemption requests with the reason and the "
    "available balance then.",
    loyalty.DAILY_TABLE: "Append-only: one row per day: points outstanding, pending and "
    "available, the day's movements, the liability in money.",
}


def _output_spec(table: str, text: str) -> dg.AssetSpec:
    """One of the four tables the run writes, with the loyalty inputs as its deps."""
    return dg.AssetSpec(
        key=table_key(table),
        group_name="marts",
        kinds={"python", "duckdb"},
        description=f"`{table}`: {text} Rules: customer_warehouse/loyalty/ and "
        "seeds/loyalty_rules.csv.",
        deps=[table_key(source) for source in LOYALTY_INPUTS],
    )


@dg.multi_asset(
    name="loyalty_points",
    specs=[_output_spec(table, text) for table, text in LOYALTY_OUTPUTS.items()],
    check_specs=LOYALTY_CHECK_SPECS,
    can_subset=False,
    **WRITES_WAREHOUSE,
    description="Post the ledger entries since the last posted day (append-only) and rebuild "
    "the balances as of the as-of date.",
)
def loyalty_points(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    with warehouse.connect() as con:
        with fail_fast_on_data_errors("Posting the loyalty points"):
            # as_of_date=None: the date dbt decided (intermediate.int_as_of_date), one rule.
            report = loyalty.post_ledger(con)
        metadata = {
            table: table_metadata(con, table, with_preview=True) for table in LOYALTY_OUTPUTS
        }
        check_results = evaluate_loyalty_checks(con)
    posted = (
        f"posted {report.days_posted} day(s) up to {report.as_of_date}: "
        f"{report.entries_posted:,} entries ({report.late_entries:,} late), "
        f"{report.rejects_posted:,} refused redemptions"
        if report.days_posted
        else f"nothing to post: {report.as_of_date} is posted already"
    )
    context.log.info(f"Loyalty: {posted}; {report.balances:,} balances as of that date.")
    common = {
        "as_of_date": dg.MetadataValue.text(report.as_of_date.isoformat()),
        "days_posted": dg.MetadataValue.int(report.days_posted),
        "entries_posted": dg.MetadataValue.int(report.entries_posted),
        "points_outstanding": dg.MetadataValue.int(report.points_outstanding),
        "seconds": dg.MetadataValue.json({k: round(v, 2) for k, v in report.seconds.items()}),
    }
    extra = {
        loyalty.LEDGER_TABLE: {
            "posted_by_type": dg.MetadataValue.md(
                counts_markdown(report.movement_counts, "movement_type")
                if report.movement_counts
                else "none"
            )
        },
        loyalty.REJECTS_TABLE: {
            "posted_by_reason": dg.MetadataValue.md(
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
