"""Every dbt seed and model as an asset; every dbt test as an asset check.

Three steps: ``dbt_models`` (everything up to the marts), then the date-partitioned tier
history ``tier_history`` and ``tier_history_derived`` (the SCD2 view and the transitions read
the history), both in ``history.py``.

One ``dbt build`` per step (on the selected subset): dbt orders seeds, models and
tests itself and, when an ERROR test fails, skips what depends on the tested node. Dagster then
sees the failed check (blocking), fails this step, and does not start the Python assets that
depend on it -- their previous tables stay as they were.

Two things happen after dbt has finished, because DuckDB lets only one process open the file
while dbt is writing it:

* the materializations get their row counts (``dagster/row_count``), the as-of date and, for
  marts, a preview and the tier counts; dbt's own log lines stream to the terminal and the
  compute log while it runs, the Dagster events are emitted when it is done;
* a failure is classified: a locked warehouse file is retried (``LOCK_RETRY``), anything else
  (a failed test, a SQL error) fails at once with dbt's messages.

A successful invocation's artifact folder (``<target>/<op>-<run>-<id>/``) is removed after its
``run_results.json`` is moved to ``<target>/run_results.json`` (where a plain ``dbt`` command
leaves it: the per-model timings of the last successful build, read by ``make bench``); a
failed one is kept whole for its ``dbt.log`` and ``run_results.json``.
"""

import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets

from customer_warehouse.tier_history import HISTORY_MODEL
from customer_warehouse.warehouse import read_as_of_date, table_exists
from orchestration.defs.dbt.project import keep_partial_parse
from orchestration.defs.dbt.translator import WarehouseTranslator
from orchestration.defs.metadata import (
    counts_markdown,
    preview,
    row_count,
    table_columns,
    value_counts,
)
from orchestration.defs.resources import (
    WRITES_WAREHOUSE,
    WarehouseResource,
    is_lock_conflict,
)

#: Columns whose value counts are shown on every marts table that has them.
DISTRIBUTION_COLUMNS = (
    "value_tier",
    "lifecycle_stage",
    "membership_level",
    "churn_risk_band",
    "nps_category",
)

#: dbt unit tests check the SQL logic on fixed rows, not the day's data: they run in
#: `make test` (every test build) and in CI, not in every scheduled build (dbt's advice).
#: The log file keeps warnings and errors only: a debug line per node costs ~15 % of a build,
#: and the run's events already stream to Dagster.
DBT_BUILD_ARGS = ["build", "--exclude-resource-type", "unit_test", "--log-level-file", "warn"]
#: dbt's per-node results (status, execution time); the last successful build's is kept.
RUN_RESULTS = "run_results.json"


class DbtBuildConfig(dg.Config):
    """Run config of the dbt step (op `dbt_models`). By default the build is incremental:
    the incremental models process what changed since the last run (docs/architecture.md,
    "Incremental models"). `full_refresh: true` rebuilds them from all raw rows
    (`dbt build --full-refresh`), e.g. after changing a macro in macros/."""

    full_refresh: bool = False


def dbt_build_args(config: DbtBuildConfig) -> list[str]:
    return [*DBT_BUILD_ARGS, "--full-refresh"] if config.full_refresh else list(DBT_BUILD_ARGS)


class DbtLockedError(RuntimeError):
    """dbt could not open the warehouse file because another process holds it (retried)."""


def build_dbt_assets(project: DbtProject) -> dg.AssetsDefinition:
    """Every dbt node but the tier history and what is derived from it (``history.py``)."""

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        dagster_dbt_translator=WarehouseTranslator(),
        name="dbt_models",
        exclude=f"{HISTORY_MODEL}+",
        **WRITES_WAREHOUSE,
    )
    def dbt_models(
        context: dg.AssetExecutionContext,
        dbt: DbtCliResource,
        warehouse: WarehouseResource,
        config: DbtBuildConfig,
    ):
        if config.full_refresh:
            context.log.info("Run config full_refresh: every incremental model is rebuilt.")
        yield from dbt_step(context, dbt, warehouse, dbt_build_args(config), keep_results=True)

    return dbt_models


def keep_run_results(invocation_dir: Path, target_dir: Path) -> Path | None:
    """Move the invocation's ``run_results.json`` to ``target_dir`` in one rename (a reader
    never sees half a file); None when dbt wrote none."""
    source = invocation_dir / RUN_RESULTS
    if not source.is_file():
        return None
    target = target_dir / RUN_RESULTS
    os.replace(source, target)  # same file system: the invocation folder is inside target_dir
    return target


def dbt_step(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,
    args: list[str],
    keep_results: bool = False,
) -> Iterator[Any]:
    """``dbt <args>`` on the step's selection: its events with table metadata, or the failure.
    ``keep_results``: keep its ``run_results.json`` as ``<target>/run_results.json``."""
    # An invalid CW_* variable fails here, with its fix. dbt inherits this process's
    # environment: give it the checked values (absolute paths), the ones the Python assets
    # use, so a relative CW_WAREHOUSE_PATH cannot point dbt at another file.
    os.environ.update(warehouse.settings().dbt_env)
    invocation = dbt.cli(args, context=context, raise_on_error=False)
    events = list(invocation.stream())
    error = invocation.get_error()
    yield from with_table_metadata(events, invocation.manifest, warehouse, context)
    if error is not None:
        message = error.description or str(error)
        if is_lock_conflict(message):
            raise DbtLockedError(message)
        raise dg.Failure(description=message, allow_retries=False)
    keep_partial_parse(Path(invocation.target_path))
    if keep_results:
        keep_run_results(invocation.target_path, Path(invocation.target_path).parent)
    shutil.rmtree(invocation.target_path, ignore_errors=True)


def with_table_metadata(
    events: Iterable[Any],
    manifest: Mapping[str, Any],
    warehouse: WarehouseResource,
    context: dg.AssetExecutionContext,
) -> Iterator[Any]:
    """The dbt events, materializations enriched with what the warehouse now holds."""
    events = list(events)
    try:
        with warehouse.connect(read_only=True) as con:
            as_of = _as_of_date(con)
            enriched = [_enrich(event, manifest, con, as_of) for event in events]
    except (duckdb.Error, OSError) as exc:
        # Metadata is a bonus: never fail a finished dbt build because of it.
        context.log.warning(f"Row counts not added (warehouse not readable: {exc}).")
        enriched = events
    yield from enriched


def _as_of_date(con: duckdb.DuckDBPyConnection) -> str | None:
    value = read_as_of_date(con, required=False)
    return None if value is None else str(value)


def _enrich(
    event: Any, manifest: Mapping[str, Any], con: duckdb.DuckDBPyConnection, as_of: str | None
) -> Any:
    if not isinstance(event, dg.Output | dg.AssetMaterialization):
        return event
    unique_id = event.metadata.get("unique_id")
    node = manifest["nodes"].get(getattr(unique_id, "value", unique_id) or "")
    if not node or (node.get("config") or {}).get("materialized") == "ephemeral":
        return event
    table = f"{node['schema']}.{node.get('alias') or node['name']}"
    if not table_exists(con, table):
        return event
    extra: dict[str, Any] = {"dagster/row_count": dg.MetadataValue.int(row_count(con, table))}
    if as_of is not None:
        extra["as_of_date"] = dg.MetadataValue.text(as_of)
    if node["schema"] == "marts":
        extra["preview"] = dg.MetadataValue.md(preview(con, table))
        columns = table_columns(con, table)
        for column in DISTRIBUTION_COLUMNS:
            if column in columns:
                extra[f"{column}_counts"] = dg.MetadataValue.md(
                    counts_markdown(value_counts(con, table, column), column, "customers")
                )
    return event.with_metadata({**event.metadata, **extra})
