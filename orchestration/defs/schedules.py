"""``full_refresh`` (every asset and check) and its ``daily_refresh`` schedule.

``make run`` executes ``full_refresh``; the schedule runs the same job once a day. The job
materializes every asset, but the work follows the new data: the raw load reads only new or
changed files and the incremental dbt models process what changed since the last run. The run
config ``ops: {dbt_models: {config: {full_refresh: true}}}`` (orchestration/run_config/
full_refresh.yaml, ``make run-full-refresh``) rebuilds the dbt models from all raw rows. The
as-of date is not a schedule parameter: it comes from CW_AS_OF_DATE like every other run (unset:
the last order date in the data), so a scheduled run and ``make run`` give the same warehouse.
"""

from __future__ import annotations

import dagster as dg

#: 06:00 UTC, after the nightly exports have landed.
DAILY_CRON = "0 6 * * *"

full_refresh = dg.define_asset_job(
    name="full_refresh",
    selection=dg.AssetSelection.all(),
    description="Materialize the whole warehouse: raw files and surveys, dbt seeds, models "
    "and tests, the tier history of the as-of date, loyalty points, predictions. The raw load "
    "and the incremental dbt models process what is new; run config "
    "dbt_models.config.full_refresh: true rebuilds the dbt models from all raw rows (never the "
    "tier history).",
    tags={"warehouse/refresh": "full"},
)

daily_refresh = dg.ScheduleDefinition(
    name="daily_refresh",
    job=full_refresh,
    cron_schedule=DAILY_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Bring everything up to date once a day (job full_refresh: new deliveries "
    "loaded, incremental models updated).",
)
