"""CRM contact lists (``customer_warehouse.crm_export``): the one exit for contact details.

Reads the reminder mart and the consent-filtered contacts; writes owner-only CSV files under
``CW_EXPORT_DIR``. Nothing of it goes into Dagster's event log but file names and row counts.
"""

import dagster as dg

from customer_warehouse import crm_export, privacy
from customer_warehouse.warehouse import read_as_of_date
from orchestration.defs.metadata import markdown_table, table_key
from orchestration.defs.resources import (
    WRITES_WAREHOUSE,
    WarehouseResource,
    fail_fast_on_data_errors,
)


@dg.asset(
    key=["exports", "crm_contact_lists"],
    group_name="exports",
    kinds={"python", "csv"},
    deps=[table_key(crm_export.REMINDERS_TABLE), table_key(crm_export.CONTACTS_TABLE)],
    **WRITES_WAREHOUSE,
    description="One owner-only CSV per CRM reminder list and as-of date, with the contact "
    "address of customers who consented (docs/privacy.md). Never part of the BI serving copy.",
)
def crm_contact_lists(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    settings = warehouse.settings()
    with fail_fast_on_data_errors("Writing the CRM contact lists"):
        key, key_source = privacy.pii_key(settings.raw_dir, log=context.log.info)
        with warehouse.connect(read_only=True) as con:
            as_of = read_as_of_date(con)
            written = crm_export.export_contact_lists(
                con, settings.export_dir, as_of, key, log=context.log.info
            )
    return dg.MaterializeResult(
        metadata={
            "as_of_date": dg.MetadataValue.text(as_of.isoformat()),
            "folder": dg.MetadataValue.path(str(settings.export_dir / "crm" / as_of.isoformat())),
            "lists": dg.MetadataValue.md(
                markdown_table(
                    ["list", "customers", "file"],
                    [(item.reminder_type, item.rows, item.path.name) for item in written],
                )
                if written
                else "nobody is due today"
            ),
            "customers": dg.MetadataValue.int(sum(item.rows for item in written)),
            "pseudonym_key": dg.MetadataValue.text(key_source),
        }
    )
