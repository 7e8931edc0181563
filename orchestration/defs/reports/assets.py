"""The HTML tier report (``customer_warehouse.tier_report``) as the last asset of the graph.

It only reads the warehouse, but DuckDB cannot open a file read-only while another process
writes it, so it waits in the same pool as the writers.
"""

from pathlib import Path

import dagster as dg

from customer_warehouse import tier_report
from orchestration.defs.resources import (
    WRITES_WAREHOUSE,
    WarehouseResource,
    fail_fast_on_data_errors,
)


class TierReportConfig(dg.Config):
    """Where to write the report; empty = ``reports/tier_report.html`` in the project."""

    out_path: str = ""


@dg.asset(
    key=["reports", "tier_report"],
    group_name="reports",
    kinds={"python", "html"},
    deps=[["marts", "tier_summary"], ["marts", "customer_tier_transitions"]],
    **WRITES_WAREHOUSE,
    description="HTML report of the tiers with embedded charts, for people without a BI tool "
    "(tier shares, movements, transition matrix).",
)
def tier_report_html(
    context: dg.AssetExecutionContext, config: TierReportConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    out_path = Path(config.out_path) if config.out_path else tier_report.DEFAULT_OUT
    with (
        warehouse.connect(read_only=True) as con,
        fail_fast_on_data_errors("Writing the tier report"),
    ):
        path = tier_report.build_report(con, out_path)
    context.log.info(f"Tier report written to {path}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "size_kb": dg.MetadataValue.float(round(path.stat().st_size / 1024, 1)),
        }
    )
