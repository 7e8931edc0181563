"""The serving copy (``customer_warehouse.serving``) as the last asset of the graph.

``serving`` publishes what readers may read (the rules file ``customer_warehouse/
serving_tables.csv``) to ``CW_SERVING_DIR``: one DuckDB file and a Parquet file per table, a
new version switched in atomically. Its deps are every asset whose table it publishes, computed
from the assets of the definitions (the dbt ones from the manifest), so a new mart is never
forgotten. Dagster starts a step only when every upstream step succeeded and its blocking
checks passed: after a failed build or a failed blocking check the step is skipped, ``current``
stays on the last good version and the run shows the failure upstream.

It only reads the warehouse (read-only connection), but DuckDB cannot open a file read-only
while another process writes it, so it waits in the same pool as the writers.
"""

from collections.abc import Iterable

import dagster as dg

from customer_warehouse import privacy, serving
from customer_warehouse.warehouse import read_as_of_date
from orchestration.defs.metadata import markdown_table
from orchestration.defs.resources import (
    WRITES_WAREHOUSE,
    WarehouseResource,
    fail_fast_on_data_errors,
)

SERVING_KEY = dg.AssetKey("serving")


def published_keys(
    assets: Iterable[dg.AssetsDefinition], rules: serving.PublishRules | None = None
) -> list[dg.AssetKey]:
    """The keys (``<schema>/<table>``) among ``assets`` whose table the rules publish."""
    rules = rules or serving.load_rules()
    keys = {key for assets_def in assets for key in assets_def.keys}
    return sorted(
        (key for key in keys if len(key.path) == 2 and rules.publishes(".".join(key.path))),
        key=lambda key: key.path,
    )


def _tables_markdown(version: serving.Version) -> str:
    rows = [
        (table, info["rows"], info["checksum"], ", ".join(info["omitted_columns"]) or "")
        for table, info in sorted(version.tables.items())
    ]
    return markdown_table(["table", "rows", "checksum", "columns left out"], rows)


def build_serving_asset(upstream: Iterable[dg.AssetsDefinition]) -> dg.AssetsDefinition:
    """The ``serving`` asset, downstream of every asset in ``upstream`` that it publishes."""
    deps = published_keys(upstream)

    @dg.asset(
        key=SERVING_KEY,
        group_name="serving",
        kinds={"duckdb", "parquet"},
        deps=deps,
        **WRITES_WAREHOUSE,
        description="Publish the serving copy for BI tools (DuckDB, read-only) and Parquet "
        "readers to CW_SERVING_DIR: a new version, switched in atomically (docs/bi.md).",
    )
    def serving_copy(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        settings = warehouse.settings()
        with (
            fail_fast_on_data_errors("Publishing the serving copy"),
            warehouse.connect(read_only=True) as con,
        ):
            key, _ = privacy.pii_key(settings.raw_dir)
            version = serving.publish(
                con,
                settings.serving_path,
                keep=settings.serving_keep,
                as_of=read_as_of_date(con),
                git_rev=serving.git_revision(),
                key=key,
            )
        context.log.info(
            f"Serving copy {version.id} published to {version.path} "
            f"({len(version.tables)} tables); pruned: {', '.join(version.pruned) or 'none'}."
        )
        return dg.MaterializeResult(
            metadata={
                "version_id": dg.MetadataValue.text(version.id),
                "path": dg.MetadataValue.path(str(version.path)),
                "current": dg.MetadataValue.path(str(settings.serving_path / "current")),
                "as_of_date": dg.MetadataValue.text(version.manifest["as_of_date"] or ""),
                "git_revision": dg.MetadataValue.text(version.manifest["git_revision"] or ""),
                "table_count": dg.MetadataValue.int(len(version.tables)),
                "tables": dg.MetadataValue.md(_tables_markdown(version)),
                "pruned_versions": dg.MetadataValue.json(list(version.pruned)),
                "removed_partials": dg.MetadataValue.json(list(version.removed_partials)),
            }
        )

    return serving_copy
