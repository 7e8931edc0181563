"""The tier history (``marts/customer_tier_history``) as a date-partitioned dbt asset, and
what is derived from it.

``tier_history``: one partition per as-of date (:data:`HISTORY_PARTITIONS`, daily). What its
step does depends on the run:

* **No partition** (``full_refresh``: ``make run``, the daily schedule): ``dbt build`` of the
  history model, which adds the rows of the run's as-of date from ``marts/customer_tiers``
  (replacing that date's rows, nothing else). The materialization is also recorded for the
  partition of that as-of date, so the UI shows which dates the history holds.
* **A partition or a range of partitions** (a backfill from the UI, ``make backfill``): the
  dates of the range are replayed in this one step (``customer_warehouse.tier_history``:
  scratch schemas, one ``dbt run`` per date; config ``every`` picks every day or month ends),
  then the history model's tests run. ``BackfillPolicy.single_run()``: a backfill of any range
  is one run, never one run per day. Only the history table is written; the marts stay as of
  the current date.

``tier_history_derived`` (not partitioned): the SCD2 view ``marts/customer_tiers_history`` and
``marts/customer_tier_transitions``, rebuilt from the whole history by every run that selects
them (``full_refresh``, ``make backfill``). They are a step of their own so that the main dbt
step stays one step: a dbt step on both sides of the history would be a cycle, which Dagster
would break by splitting ``dbt_models`` into several dbt invocations.
"""

import os
from datetime import date

import dagster as dg
import duckdb
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets
from pydantic import Field

from customer_warehouse import tier_history
from customer_warehouse.warehouse import read_as_of_date
from orchestration.defs.dbt.assets import DBT_BUILD_ARGS, dbt_step
from orchestration.defs.dbt.project import dbt_target_path
from orchestration.defs.dbt.translator import WarehouseTranslator
from orchestration.defs.resources import (
    WRITES_WAREHOUSE,
    WarehouseResource,
    fail_fast_on_data_errors,
)

HISTORY_KEY = dg.AssetKey(["marts", tier_history.HISTORY_MODEL])
#: The first as-of date a backfill can replay. Earlier data is still read (every as-of date
#: sees the whole order history before it); only the history cannot start before this day.
FIRST_PARTITION_DATE = "2010-01-01"
HISTORY_PARTITIONS = dg.DailyPartitionsDefinition(start_date=FIRST_PARTITION_DATE, end_offset=1)
#: Only tests whose every parent is the history model: the SCD2 test reads a model of the
#: other dbt step (it runs there).
HISTORY_TEST_ARGS = ["--indirect-selection", "cautious"]


class TierHistoryConfig(dg.Config):
    """Options of a backfill (a partition range) of the tier history."""

    every: str = Field(
        default="auto",
        description="Which as-of dates of the range to compute: `day` (every day), `month` "
        "(month ends and the range's last day) or `auto` (every day for up to "
        f"{tier_history.DAILY_MAX_DAYS} days, else month ends).",
    )


def build_tier_history_assets(project: DbtProject) -> dg.AssetsDefinition:
    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        dagster_dbt_translator=WarehouseTranslator(),
        select=tier_history.HISTORY_MODEL,
        name="tier_history",
        partitions_def=HISTORY_PARTITIONS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        **WRITES_WAREHOUSE,
    )
    def tier_history_assets(
        context: dg.AssetExecutionContext,
        dbt: DbtCliResource,
        warehouse: WarehouseResource,
        config: TierHistoryConfig,
    ):
        if context.has_partition_key or context.has_partition_key_range:
            yield from _replay_partitions(context, dbt, warehouse, config, project)
        else:
            yield from _add_current_date(context, dbt, warehouse)

    return tier_history_assets


def build_tier_history_derived_assets(project: DbtProject) -> dg.AssetsDefinition:
    """The SCD2 view and the transitions: every dbt node downstream of the history."""

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        dagster_dbt_translator=WarehouseTranslator(),
        select=f"{tier_history.HISTORY_MODEL}+",
        exclude=tier_history.HISTORY_MODEL,
        name="tier_history_derived",
        # `make backfill` selects these with the history's partition range; built once there.
        backfill_policy=dg.BackfillPolicy.single_run(),
        **WRITES_WAREHOUSE,
    )
    def tier_history_derived(
        context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
    ):
        yield from dbt_step(context, dbt, warehouse, DBT_BUILD_ARGS)

    return tier_history_derived


def _add_current_date(context, dbt: DbtCliResource, warehouse: WarehouseResource):
    """The daily path: the history model adds the current as-of date's rows."""
    yield from dbt_step(context, dbt, warehouse, [*DBT_BUILD_ARGS, *HISTORY_TEST_ARGS])
    as_of = _current_as_of_date(warehouse)
    if as_of is not None and HISTORY_PARTITIONS.has_partition_key(as_of):
        # The same materialization, recorded for the partition of its as-of date.
        yield dg.AssetMaterialization(
            asset_key=HISTORY_KEY,
            partition=as_of,
            metadata={"as_of_date": dg.MetadataValue.text(as_of), "written_by": "daily run"},
        )


def _current_as_of_date(warehouse: WarehouseResource) -> str | None:
    try:
        with warehouse.connect(read_only=True) as con:
            value = read_as_of_date(con, required=False)
    except duckdb.Error:
        return None
    return None if value is None else str(value)


def _replay_partitions(
    context,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,
    config: TierHistoryConfig,
    project: DbtProject,
):
    """The backfill path: replay the dates of the partition range, then test the history."""
    settings = warehouse.settings()
    key_range = context.partition_key_range
    start, end = date.fromisoformat(key_range.start), date.fromisoformat(key_range.end)
    os.environ.update(settings.dbt_env)  # dbt in this process reads the checked settings
    with fail_fast_on_data_errors("Replaying the tier history"):
        dates = tier_history.as_of_dates(start, end, config.every)
        context.log.info(
            f"Tier history backfill {start}..{end} (every={config.every}): "
            f"{len(dates)} as-of date(s) in this run."
        )
        report = tier_history.replay(
            dates,
            warehouse_path=settings.warehouse_path,
            project_dir=project.project_dir,
            profiles_dir=project.profiles_dir or project.project_dir,
            work_dir=dbt_target_path(project.project_dir) / "tier_replay",
            log=context.log.info,
        )
    yield dg.MaterializeResult(
        asset_key=HISTORY_KEY,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(report.history_rows),
            "as_of_dates_written": dg.MetadataValue.json(
                [result.as_of_date.isoformat() for result in report.dates]
            ),
            "as_of_dates_in_history": dg.MetadataValue.int(report.history_dates),
            "every": dg.MetadataValue.text(config.every),
            "seconds": dg.MetadataValue.float(round(report.seconds, 1)),
        },
    )
    yield from _check_results(context, report.tests)


def _check_results(context, tests: list[tier_history.TestResult]):
    """The replay's dbt tests of the history as this asset's checks (dbt test name = check
    name, as dagster-dbt names them); a failed ERROR test fails the step, as in a dbt build."""
    specs = {spec.name: spec for spec in context.assets_def.check_specs}
    blocking = []
    for test in tests:
        if test.name not in specs:
            continue
        severity = (
            dg.AssetCheckSeverity.WARN if test.status == "warn" else dg.AssetCheckSeverity.ERROR
        )
        yield dg.AssetCheckResult(
            asset_key=HISTORY_KEY,
            check_name=test.name,
            passed=test.passed,
            severity=severity,
            metadata={
                "status": test.status,
                "failures": test.failures or 0,
                "message": test.message,
            },
        )
        if not test.passed and severity == dg.AssetCheckSeverity.ERROR:
            blocking.append(f"{test.name}: {test.message}")
    if blocking:
        raise dg.Failure(
            description="dbt tests of the tier history failed after the backfill: "
            + "; ".join(blocking),
            allow_retries=False,
        )
