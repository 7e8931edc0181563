"""The Dagster definitions, built in one place (``build_definitions``).

Layout, one folder per domain: ``raw`` (raw files, surveys, the survey sensor), ``dbt`` (the dbt
project, its translator and assets; ``history.py``: the date-partitioned tier history and what
derives from it), ``loyalty`` and ``predictions`` (Python marts and their checks), ``reports``
(the HTML tier report), ``exports`` (CRM contact lists), ``serving`` (the serving copy for BI
tools, after every table it publishes), ``freshness`` (raw and mart freshness checks, the
marts' freshness policy), ``alerts`` (the run-failure sensor); ``resources.py`` (DuckDB,
pool, retries), ``metadata.py`` (row counts, previews), ``schedules.py`` (the full job and
its schedule). The executor is ``orchestration/recovery/executor.py`` (dead runs cleaned up,
bounded writer-pool waits).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from customer_warehouse.config import PROJECT_DIR, RAW_SOURCE_NAMES
from customer_warehouse.freshness import SURVEYS
from orchestration.defs.alerts.sensors import run_failure_alert
from orchestration.defs.dbt.assets import build_dbt_assets
from orchestration.defs.dbt.history import (
    build_tier_history_assets,
    build_tier_history_derived_assets,
)
from orchestration.defs.dbt.project import (
    WarehouseDbtResource,
    build_dbt_project,
    dbt_executable,
)
from orchestration.defs.exports.assets import crm_contact_lists
from orchestration.defs.freshness.checks import (
    build_mart_freshness_checks,
    mart_freshness_policy,
    mart_keys,
    policy_max_age_hours,
    with_mart_freshness_policy,
)
from orchestration.defs.loyalty.assets import loyalty_points
from orchestration.defs.predictions.assets import customer_predictions, prediction_backtest
from orchestration.defs.privacy.assets import build_erasure_asset
from orchestration.defs.raw.assets import raw_files, survey_files
from orchestration.defs.raw.sensors import new_survey_files, survey_refresh
from orchestration.defs.reports.assets import tier_report_html
from orchestration.defs.resources import WarehouseResource
from orchestration.defs.schedules import daily_refresh, full_refresh
from orchestration.defs.serving.assets import build_serving_asset
from orchestration.recovery import dead_run_cleanup, writer_pool_executor


def build_definitions(project_dir: Path = PROJECT_DIR) -> dg.Definitions:
    """All assets, checks, jobs, schedules, sensors and resources of the warehouse.

    ``project_dir`` is the dbt project (a test can point it at a modified copy). Building runs
    ``dbt parse`` when the manifest is missing or stale (orchestration/defs/dbt/project.py).
    """
    project = build_dbt_project(project_dir)
    assets = [
        raw_files,
        survey_files,
        build_dbt_assets(project),
        build_tier_history_assets(project),
        build_tier_history_derived_assets(project),
        loyalty_points,
        customer_predictions,
        prediction_backtest,
        tier_report_html,
        crm_contact_lists,
    ]
    # Between runs: the daemon warns when a mart was not rebuilt for CW_MAX_RAW_AGE_HOURS.
    assets = with_mart_freshness_policy(assets, mart_freshness_policy(policy_max_age_hours()))
    marts = mart_keys(assets)
    return dg.Definitions(
        # The serving copy comes after every asset whose table it publishes; the erasure
        # step after every writer.
        assets=[*assets, build_serving_asset(assets), build_erasure_asset(assets)],
        asset_checks=[build_mart_freshness_checks(marts, [*RAW_SOURCE_NAMES, SURVEYS])],
        jobs=[full_refresh, survey_refresh],
        schedules=[daily_refresh],
        sensors=[new_survey_files, dead_run_cleanup, run_failure_alert],
        resources={
            "dbt": WarehouseDbtResource(project_dir=project, dbt_executable=dbt_executable()),
            "warehouse": WarehouseResource(),
        },
        # One process runs the steps one after another: DuckDB has one writer at a time
        # anyway, and no step pays for a fresh interpreter and a definitions load. The run
        # first cleans up dead runs, and waits for the writer pool boundedly (recovery/executor.py).
        executor=writer_pool_executor,
    )
