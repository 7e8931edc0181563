"""Freshness of the raw inputs and the marts (``customer_warehouse.freshness``), as Dagster sees it.

* ``raw_data_is_fresh`` (WARN, not blocking) on every raw table of a file: evaluated by the
  steps that load them (``raw_files``, ``survey_files``); fails when the newest raw file is older
  than ``CW_MAX_RAW_AGE_HOURS``. Metadata: the file, when it arrived, its age and the limit;
  on ``raw/orders`` also the newest order timestamp and its age.
* ``built_on_fresh_raw_data`` (WARN, not blocking) on every mart, one step after the marts:
  the same judgement, stated on the tables BI reads, with the as-of date they were built for.
* A stale run also says so in its summary: the run tag ``warehouse/stale_raw_data`` (shown in
  the runs list) and a warning line in the run's log.
* Between runs, Dagster's own freshness policy on the marts (:func:`mart_freshness_policy`):
  the daemon (``make dev``) shows a mart as WARN when it was not materialized for
  ``CW_MAX_RAW_AGE_HOURS`` and as FAIL after twice that.
"""

import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from customer_warehouse import freshness
from customer_warehouse.config import (
    DEFAULT_MAX_RAW_AGE_HOURS,
    MAX_RAW_AGE_VARIABLE,
    ConfigError,
    parse_max_raw_age_hours,
)
from customer_warehouse.warehouse import read_as_of_date
from orchestration.defs.metadata import markdown_table
from orchestration.defs.resources import WRITES_WAREHOUSE, WarehouseResource

RAW_CHECK = "raw_data_is_fresh"
MART_CHECK = "built_on_fresh_raw_data"
#: The run tag a run on stale raw data gets (its value names the stale sources and ages).
STALE_TAG = "warehouse/stale_raw_data"


def raw_check_spec(key: dg.AssetKey, source: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        RAW_CHECK,
        asset=key,
        description=f"The newest raw file of {source} arrived at most CW_MAX_RAW_AGE_HOURS "
        "ago (default 36 h). Fails with severity WARN and the file's age when it is older; the "
        "run goes on and its tag warehouse/stale_raw_data names the stale sources.",
        blocking=False,
    )


def _age_metadata(age: freshness.SourceAge) -> dict[str, Any]:
    return {
        "newest_file": dg.MetadataValue.text(str(age.newest_file or "(no file)")),
        "file_modified_at": dg.MetadataValue.text(
            "" if age.modified_at is None else age.modified_at.isoformat()
        ),
        "file_age_hours": dg.MetadataValue.float(round(age.age_hours or 0.0, 2)),
        "max_age_hours": dg.MetadataValue.float(age.max_age_hours),
        "checked_at": dg.MetadataValue.text(age.checked_at.isoformat()),
    }


def raw_check_result(
    key: dg.AssetKey, age: freshness.SourceAge, newest_order_at: datetime | None = None
) -> dg.AssetCheckResult:
    """``raw_data_is_fresh`` of one raw table; with ``newest_order_at`` (orders) its age too."""
    metadata = _age_metadata(age)
    description = age.describe()
    if newest_order_at is not None:
        order_age = (age.checked_at - newest_order_at).total_seconds() / 3600.0
        metadata["newest_order_at"] = dg.MetadataValue.text(newest_order_at.isoformat())
        metadata["newest_order_age_hours"] = dg.MetadataValue.float(round(order_age, 2))
        description += f" Newest order: {newest_order_at.isoformat()} ({order_age:.1f} h ago)."
    return dg.AssetCheckResult(
        check_name=RAW_CHECK,
        asset_key=key,
        passed=not age.stale,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=description,
    )


def note_stale_run(context: dg.OpExecutionContext, ages: Iterable[freshness.SourceAge]) -> None:
    """A run on stale raw data says so in its summary: a run tag and a warning in its log
    (each step that finds a stale source adds its sources to the tag)."""
    ages = list(ages)
    summary = freshness.stale_summary(ages)
    if summary is None:
        return
    for age in ages:
        if age.stale:
            context.log.warning(age.describe())
    previous = context.instance.get_run_by_id(context.run_id)
    before = (previous.tags.get(STALE_TAG) if previous else None) or ""
    if summary not in before:
        value = f"{before}; {summary}" if before else summary
        context.instance.add_run_tags(context.run_id, {STALE_TAG: value[:250]})


def mart_freshness_policy(max_age_hours: float) -> dg.FreshnessPolicy:
    """WARN after ``max_age_hours`` without a materialization, FAIL after twice that."""
    return dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=2 * max_age_hours),
        warn_window=timedelta(hours=max_age_hours),
    )


def policy_max_age_hours() -> float:
    """CW_MAX_RAW_AGE_HOURS when the definitions load (the policy is part of the definitions).
    An invalid value gives the default here: the run then fails at its first step with the
    variable named, as for every CW_* setting, instead of the whole code location."""
    try:
        return parse_max_raw_age_hours(os.environ.get(MAX_RAW_AGE_VARIABLE))
    except ConfigError:
        return DEFAULT_MAX_RAW_AGE_HOURS


def with_mart_freshness_policy(
    assets: Iterable[dg.AssetsDefinition], policy: dg.FreshnessPolicy
) -> list[dg.AssetsDefinition]:
    """``assets`` with ``policy`` on every ``marts/*`` spec (the other specs unchanged)."""

    def apply(spec: dg.AssetSpec) -> dg.AssetSpec:
        return dg.apply_freshness_policy(spec, policy) if spec.key.path[0] == "marts" else spec

    return [
        assets_def.map_asset_specs(apply)
        if any(key.path[0] == "marts" for key in assets_def.keys)
        else assets_def
        for assets_def in assets
    ]


def mart_keys(assets: Iterable[dg.AssetsDefinition]) -> list[dg.AssetKey]:
    """The keys of every ``marts/<table>`` among ``assets``, sorted."""
    keys = {key for assets_def in assets for key in assets_def.keys}
    return sorted((key for key in keys if key.path[0] == "marts"), key=lambda k: k.path)


def build_mart_freshness_checks(
    marts: Sequence[dg.AssetKey], sources: Sequence[str]
) -> dg.AssetChecksDefinition:
    """``built_on_fresh_raw_data`` on every mart in ``marts``: one step after them, subsettable
    (a job that builds some marts checks those)."""

    @dg.multi_asset_check(
        name="marts_freshness",
        specs=[
            dg.AssetCheckSpec(
                MART_CHECK,
                asset=key,
                description="The raw files this mart was built from arrived at most "
                "CW_MAX_RAW_AGE_HOURS ago. Fails with severity WARN, naming the stale sources "
                "and the as-of date, when the mart holds stale data.",
                blocking=False,
            )
            for key in marts
        ],
        can_subset=True,
        **WRITES_WAREHOUSE,
        description="Freshness of the marts: how old the raw data they were built from is.",
    )
    def marts_freshness(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
        settings = warehouse.settings()
        ages = freshness.source_ages(
            settings.raw_dir, sources, settings.max_raw_age_hours, datetime.now(UTC)
        )
        with warehouse.connect(read_only=True) as con:
            as_of = read_as_of_date(con, required=False)
        stale = [age for age in ages if age.stale]
        table = markdown_table(
            ["source", "newest file", "arrived (UTC)", "age (h)", "stale"],
            [
                (
                    age.source,
                    age.newest_file.name if age.newest_file else "(no file)",
                    "" if age.modified_at is None else age.modified_at.isoformat(),
                    "" if age.age_hours is None else f"{age.age_hours:.1f}",
                    "yes" if age.stale else "no",
                )
                for age in ages
            ],
        )
        description = (
            freshness.stale_summary(ages) + f"; marts as of {as_of}."
            if stale
            else f"Every raw source arrived within {settings.max_raw_age_hours:g} h; marts as "
            f"of {as_of}."
        )
        oldest = max((age.age_hours or 0.0 for age in ages), default=0.0)
        for check_key in sorted(context.selected_asset_check_keys, key=str):
            yield dg.AssetCheckResult(
                check_name=MART_CHECK,
                asset_key=check_key.asset_key,
                passed=not stale,
                severity=dg.AssetCheckSeverity.WARN,
                description=description,
                metadata={
                    "as_of_date": dg.MetadataValue.text("" if as_of is None else str(as_of)),
                    "oldest_source_age_hours": dg.MetadataValue.float(round(oldest, 2)),
                    "max_age_hours": dg.MetadataValue.float(settings.max_raw_age_hours),
                    "stale_sources": dg.MetadataValue.json([age.source for age in stale]),
                    "raw_sources": dg.MetadataValue.md(table),
                },
            )

    return marts_freshness
