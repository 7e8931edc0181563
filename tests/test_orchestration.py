"""The Dagster asset graph without a build: one connected graph, checks, the writer pool, the
freshness policy, the manifest, the schedule, the sensor and the retry rule. The full build
in-process on demo data is in tests/test_orchestration_full_build.py.

Everything runs against temporary folders: a tmp dbt target path for the whole module (the
manifest is parsed there once), an ephemeral Dagster instance."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import dagster as dg
import duckdb
import pytest
from dagster_dbt import DbtProject

from customer_warehouse import ingestion
from orchestration.defs.dbt.project import dbt_target_path, manifest_is_current
from orchestration.defs.raw.assets import SURVEY_KEYS, raw_files
from orchestration.defs.raw.sensors import new_survey_files
from orchestration.defs.resources import (
    LOCK_RETRY,
    WRITER_POOL,
    WarehouseResource,
    fail_fast_on_data_errors,
    is_lock_conflict,
)

from .conftest import PROJECT_DIR
from .dagster_job import step_failures
from .orchestration_helpers import LAYERS, SURVEY_UNIQUE_TEST, key

pytestmark = pytest.mark.usefixtures("dbt_paths")

# --------------------------------------------------------------------------------------------
# The graph (no build needed)
# --------------------------------------------------------------------------------------------


def test_graph_is_one_connected_picture(defs):
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    # Every dbt source is written by a Python asset: no external (unmaterializable) assets.
    assert [k for k in keys if not graph.get(k).is_materializable] == []
    for source in ("orders", "customers", "order_items", "products", "redemptions"):
        downstream = graph.get(key(f"raw/{source}")).child_keys
        assert any(child.path[0] == "staging" for child in downstream), source
    assert (
        key("staging/stg_surveys__responses") in graph.get(key("raw/survey_responses")).child_keys
    )
    # The loyalty asset reads dbt tables, declared from the loyalty module's constants.
    loyalty_parents = graph.get(key("marts/loyalty_balances")).parent_keys
    assert key("intermediate/int_orders_joined_to_membership_levels") in loyalty_parents
    assert key("seeds/loyalty_rules") in loyalty_parents
    assert all(parent in keys for parent in loyalty_parents)
    # Groups are the layers, keys are the warehouse tables.
    assert {graph.get(k).group_name for k in keys} <= LAYERS
    assert graph.get(key("staging/stg_shop__orders")).group_name == "staging"
    assert graph.get(key("seeds/membership_levels")).group_name == "seeds"
    assert graph.get(key("marts/customer_tiers")).group_name == "marts"
    # The tier history: date-partitioned, a backfill of a range is one run; the SCD2 view and
    # the transitions come after it (docs/tiers.md).
    history = graph.get(key("marts/customer_tier_history"))
    assert history.group_name == "marts"
    assert isinstance(history.partitions_def, dg.DailyPartitionsDefinition)
    assert history.backfill_policy == dg.BackfillPolicy.single_run()
    assert key("marts/customer_tiers") in history.parent_keys
    assert key("raw/orders") in history.parent_keys  # a backfill rebuilds from the raw tables
    for derived in ("marts/customer_tiers_history", "marts/customer_tier_transitions"):
        assert graph.get(key(derived)).parent_keys == {history.key}
        assert graph.get(key(derived)).partitions_def is None


def test_dbt_tests_are_checks_and_error_tests_block(defs):
    specs = {
        spec.key: spec
        for assets_def in defs.resolve_asset_graph().assets_defs
        for spec in assets_def.check_specs
    }
    survey_unique = dg.AssetCheckKey(key("staging/stg_surveys__responses"), SURVEY_UNIQUE_TEST)
    assert survey_unique in specs
    assert specs[survey_unique].blocking  # dbt_project.yml: data tests have severity error
    assert len([k for k in specs if k.asset_key.path[0] == "staging"]) >= 10
    balance = dg.AssetCheckKey(key("marts/loyalty_balances"), "balance_equals_ledger_sum")
    assert specs[balance].blocking


def test_every_writer_is_in_the_pool_and_retries_only_locks(defs):
    graph = defs.resolve_asset_graph()
    writers = {assets_def.node_def.name: assets_def for assets_def in graph.assets_defs}
    assert {
        "raw_files",
        "survey_files",
        "dbt_models",
        "loyalty_points",
        "customer_predictions",
        "marts__prediction_backtest",
        "reports__tier_report",
        "tier_history",
        "tier_history_derived",
    } <= set(writers)
    for name, assets_def in writers.items():
        assert assets_def.node_def.pool == WRITER_POOL, name
        assert assets_def.node_def.retry_policy == LOCK_RETRY, name


def test_freshness_checks_policy_and_failure_alerts_are_wired(defs):
    """Raw tables and marts carry the WARN freshness checks (never blocking), every mart the
    time-window freshness policy, and the run-failure sensor is on by default."""
    graph = defs.resolve_asset_graph()
    specs = {spec.key: spec for assets_def in graph.assets_defs for spec in assets_def.check_specs}
    marts = {k for k in graph.get_all_asset_keys() if k.path[0] == "marts"}
    assert len(marts) > 10
    for mart in marts:
        assert not specs[dg.AssetCheckKey(mart, "built_on_fresh_raw_data")].blocking
        assert graph.get(mart).freshness_policy is not None, mart
    for source in ("orders", "customers", "order_items", "products", "redemptions",
                   "survey_responses"):  # fmt: skip
        assert not specs[dg.AssetCheckKey(key(f"raw/{source}"), "raw_data_is_fresh")].blocking
        assert graph.get(key(f"raw/{source}")).freshness_policy is None
    sensor = defs.resolve_sensor_def("run_failure_alert")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert set(defs.resolve_job_def("full_refresh").asset_layer.asset_graph.asset_check_keys) >= {
        dg.AssetCheckKey(mart, "built_on_fresh_raw_data") for mart in marts
    }


def test_manifest_is_parsed_into_the_target_path(defs, dbt_paths):
    assert dbt_target_path() == dbt_paths / "target"
    assert (dbt_paths / "target" / "manifest.json").is_file()


def test_manifest_is_stale_when_a_dbt_file_is_newer(tmp_path):
    (tmp_path / "dbt_project.yml").write_text("name: x\n")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a.sql").write_text("select 1")
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "manifest.json").write_text("{}")
    project = DbtProject(project_dir=tmp_path, target_path=tmp_path / "target")
    os.utime(tmp_path / "models" / "a.sql", (1_000_000, 1_000_000))
    os.utime(tmp_path / "dbt_project.yml", (1_000_000, 1_000_000))
    assert manifest_is_current(project)
    os.utime(tmp_path / "models" / "a.sql", (3_000_000_000, 3_000_000_000))  # an edit
    assert not manifest_is_current(project)
    (tmp_path / "target" / "manifest.json").unlink()
    assert not manifest_is_current(project)


def test_daily_refresh_schedule_materializes_everything(defs):
    schedule = defs.resolve_schedule_def("daily_refresh")
    assert schedule.job_name == "full_refresh"
    assert schedule.cron_schedule == "0 6 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    graph = defs.resolve_asset_graph()
    job = defs.resolve_job_def("full_refresh")
    assert job.asset_layer.selected_asset_keys == graph.get_all_asset_keys()
    # The history is partitioned, the daily run is not: the tick asks for no partition (the
    # history step then adds the run's as-of date), and one dbt step builds the marts.
    [request] = schedule.evaluate_tick(dg.build_schedule_context()).run_requests
    assert request.partition_key is None
    assert sum(name.startswith("dbt_models") for name in job.graph.node_dict) == 1


def test_dagster_yaml_template_limits_the_writer_pool_to_one(tmp_path):
    shutil.copy(PROJECT_DIR / "orchestration" / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1
        assert pools.pool_granularity.value == "op"
    finally:
        instance.dispose()


# --------------------------------------------------------------------------------------------
# Sensor
# --------------------------------------------------------------------------------------------


def test_new_survey_files_sensor_requests_one_run_per_change(defs, demo_dir, tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    surveys = raw / "surveys"
    surveys.mkdir(parents=True)
    first, second = sorted((demo_dir / "surveys").iterdir())[:2]
    shutil.copy(first, surveys / first.name)
    monkeypatch.setenv("CW_RAW_DIR", str(raw))

    with dg.instance_for_test() as instance:
        tick = new_survey_files.evaluate_tick(dg.build_sensor_context(instance=instance))
        assert len(tick.run_requests) == 1
        assert tick.run_requests[0].tags["survey_files"] == first.name

        again = new_survey_files.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=tick.cursor)
        )
        assert again.run_requests == []
        assert "No new or changed" in (again.skip_message or "")

        # Ignored like the ingestion ignores them: hidden files and other suffixes.
        (surveys / ".partial.csv").write_text("customer_id\n")
        (surveys / "notes.txt").write_text("not a survey")
        ignored = new_survey_files.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=again.cursor)
        )
        assert ignored.run_requests == []

        shutil.copy(second, surveys / second.name)
        new = new_survey_files.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=ignored.cursor)
        )
        assert [r.tags["survey_files"] for r in new.run_requests] == [second.name]
        assert new.run_requests[0].run_key != tick.run_requests[0].run_key

        (surveys / first.name).write_text((surveys / first.name).read_text() + "\n\n")
        changed = new_survey_files.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=new.cursor)
        )
        assert [r.tags["survey_files"] for r in changed.run_requests] == [first.name]

    # The run covers the survey asset and what depends on it, not the shop sources.
    assert new_survey_files.job_name == "survey_refresh"
    selected = defs.resolve_job_def("survey_refresh").asset_layer.selected_asset_keys
    assert set(SURVEY_KEYS) <= selected
    assert key("staging/stg_surveys__responses") in selected
    assert key("marts/customer_features") in selected
    assert key("raw/orders") not in selected
    assert key("marts/loyalty_balances") not in selected


# --------------------------------------------------------------------------------------------
# Failures: a data error fails at once, a lock conflict is left to the retry policy
# --------------------------------------------------------------------------------------------


def test_a_broken_raw_folder_fails_at_once_with_the_file_named(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    # No amount column: a structural error (a ';' delimiter would load: it is detected).
    (raw / "orders.csv").write_text("order_id,customer_id,ordered_at\n1,c1,2025-01-01\n")
    monkeypatch.setenv("CW_RAW_DIR", str(raw))
    monkeypatch.setenv("CW_WAREHOUSE_PATH", str(tmp_path / "warehouse.duckdb"))
    result = dg.materialize(
        [raw_files], resources={"warehouse": WarehouseResource()}, raise_on_error=False
    )
    assert not result.success
    events = {event.event_type_value for event in result.all_events}
    assert "STEP_UP_FOR_RETRY" not in events  # a data error is not retried
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "orders.csv" in failure.event_specific_data.error.message
    assert "amount" in failure.event_specific_data.error.message


def test_an_invalid_setting_fails_with_the_variable_named(tmp_path, monkeypatch):
    monkeypatch.setenv("CW_RAW_DIR", str(tmp_path / "missing"))
    monkeypatch.setenv("CW_WAREHOUSE_PATH", str(tmp_path / "warehouse.duckdb"))
    result = dg.materialize(
        [raw_files], resources={"warehouse": WarehouseResource()}, raise_on_error=False
    )
    assert not result.success
    assert "CW_RAW_DIR" in " ".join(step_failures(result).values())


def test_only_a_locked_warehouse_is_left_to_the_retry_policy(tmp_path):
    path = tmp_path / "locked.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
         "sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(duckdb.Error) as locked:
            duckdb.connect(str(path))
        assert is_lock_conflict(locked.value)
        # The lock error passes through untouched (RetryPolicy retries it) ...
        with pytest.raises(duckdb.Error), fail_fast_on_data_errors("test"):
            raise locked.value
    finally:
        holder.communicate("", timeout=60)
    # ... any other error becomes a Failure that bypasses the retry policy.
    with pytest.raises(dg.Failure) as failure, fail_fast_on_data_errors("Loading x"):
        raise ingestion.RawDataError("orders.csv: missing required column(s) amount")
    assert failure.value.allow_retries is False
    assert "Loading x failed: orders.csv" in failure.value.description
    assert not is_lock_conflict(failure.value.description)
