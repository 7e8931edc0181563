"""``full_refresh`` (every asset and check) and its ``daily_refresh`` schedule.

``make run`` executes ``full_refresh``; the schedule runs the same job once a day. The as-of
date is not a schedule parameter: it comes from CW_AS_OF_DATE like every other run (unset:
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
    "and tests, the tier history of the as-of date, loyalty points, predictions.",
    tags={"warehouse/refresh": "full"},
)

daily_refresh = dg.ScheduleDefinition(
    name="daily_refresh",
    job=full_refresh,
    cron_schedule=DAILY_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Rebuild everything once a day (job full_refresh).",
)
