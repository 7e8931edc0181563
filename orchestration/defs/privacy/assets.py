"""Erasure requests, finished at the end of a run (``customer_warehouse.privacy``).

The raw load already keeps erased customers' personal values out of every raw table, and the
dbt build rebuilt everything from those tables. What is left is old copies: the CRM contact
lists written on earlier days and the free blocks of the DuckDB file. When a request is new
(``raw.erasure_requests.compacted_at`` is null) this asset removes the customers from every
contact list and rewrites the warehouse file from its live tables; otherwise it does nothing.
It runs after every other writer of the run (its deps are all of them).
"""

from collections.abc import Iterable

import dagster as dg

from customer_warehouse import crm_export, privacy
from orchestration.defs.resources import (
    WRITES_WAREHOUSE,
    WarehouseResource,
    fail_fast_on_data_errors,
)

ERASURE_KEY = dg.AssetKey(["privacy", "erasure"])


def build_erasure_asset(upstream: Iterable[dg.AssetsDefinition]) -> dg.AssetsDefinition:
    """The ``privacy/erasure`` asset, after every asset in ``upstream``."""
    deps = sorted({key for assets_def in upstream for key in assets_def.keys}, key=str)

    @dg.asset(
        key=ERASURE_KEY,
        group_name="privacy",
        kinds={"python", "duckdb"},
        deps=deps,
        **WRITES_WAREHOUSE,
        description="Finish new erasure requests: remove the customers from every CRM contact "
        "list ever written and rewrite the warehouse file without free space (docs/privacy.md). "
        "Nothing to do, nothing done.",
    )
    def erasure(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        settings = warehouse.settings()
        with warehouse.connect(read_only=True) as con:
            pending = privacy.pending_erasures(con)
        removed = 0
        compacted = False
        if pending:
            with fail_fast_on_data_errors("Finishing the erasure requests"):
                removed = crm_export.erase_customers(
                    settings.export_dir, set(pending), log=context.log.info
                )
                compacted = privacy.compact_warehouse(
                    settings.warehouse_path, log=context.log.info, config=settings.duckdb_config
                )
        return dg.MaterializeResult(
            metadata={
                "new_requests_finished": dg.MetadataValue.int(len(pending)),
                "contact_list_rows_removed": dg.MetadataValue.int(removed),
                "warehouse_rewritten": dg.MetadataValue.bool(compacted),
            }
        )

    return erasure
