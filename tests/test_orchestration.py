"""The Dagster asset graph: one connected graph, the full build in-process on demo data, the
loyalty invariants, a failing blocking check stopping what depends on it, the sensor, the
schedule, the writer pool and the retry rule.

Everything runs against temporary folders: a tmp DuckDB file per build, a tmp dbt target path
for the whole module (the manifest is parsed there once), an ephemeral Dagster instance.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_dbt import DbtProject

from customer_warehouse import ingestion, loyalty, privacy, serving
from orchestration.defs import build_definitions
from orchestration.defs.dbt.project import dbt_target_path, manifest_is_current
from orchestration.defs.loyalty.assets import LOYALTY_OUTPUTS
from orchestration.defs.raw.assets import SURVEY_KEYS, raw_files
from orchestration.defs.raw.sensors import new_survey_files
from orchestration.defs.resources import (
    LOCK_RETRY,
    WRITER_POOL,
    WarehouseResource,
    fail_fast_on_data_errors,
    is_lock_conflict,
)

from .conftest import PROJECT_DIR, STAGING_SPLITS
from .dagster_job import (
    TEST_PII_KEY,
    check_evaluations,
    isolated_dbt_paths,
    materialized,
    run_job,
    step_failures,
    table_fingerprints,
)
from .serving_checks import assert_nothing_personal, content_mismatches, personal_values_found

DEMO_CUSTOMERS = 1000
DEMO_DIRTY_RATE = 0.01
LAYERS = {"raw", "seeds", "staging", "intermediate", "marts", "reports", "exports", "serving",
          "privacy"}  # fmt: skip
PREDICTION_TABLES = ("marts.customer_predictions", "marts.clv_model_params")
SURVEY_UNIQUE_TEST = "unique_stg_surveys__responses_response_id"


def key(path: str) -> dg.AssetKey:
    return dg.AssetKey(path.split("/"))


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def dbt_paths(tmp_path_factory) -> Iterator[Path]:
    with isolated_dbt_paths(tmp_path_factory.mktemp("dagster_dbt")) as folder:
        yield folder


@pytest.fixture(scope="module")
def defs(dbt_paths) -> dg.Definitions:
    return build_definitions()


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "raw"
    subprocess.run(
        [sys.executable, "-m", "customer_warehouse.demo", "--out", str(out),
         "--customers", str(DEMO_CUSTOMERS), "--dirty-rate", str(DEMO_DIRTY_RATE), "--quiet"],
        cwd=PROJECT_DIR, check=True, timeout=600,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def full_build(defs, demo_dir, tmp_path_factory):
    """The whole graph materialized once (job full_refresh) into a tmp warehouse."""
    warehouse = tmp_path_factory.mktemp("full") / "warehouse.duckdb"
    return run_job(defs, demo_dir, warehouse), warehouse


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


# --------------------------------------------------------------------------------------------
# The full graph, in-process, on demo data
# --------------------------------------------------------------------------------------------


def _csv_rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


def _survey_records(folder: Path) -> int:
    total = 0
    for path in folder.iterdir():
        if path.suffix == ".json":
            total += len(json.loads(path.read_text(encoding="utf-8")))
        elif path.suffix == ".csv":
            total += _csv_rows(path)
    return total


@pytest.mark.slow
def test_full_graph_materializes_every_asset_and_passes_every_check(defs, full_build):
    result, _warehouse = full_build
    assert result.success, step_failures(result)
    assert set(materialized(result)) == defs.resolve_asset_graph().get_all_asset_keys()
    evaluations = check_evaluations(result)
    failed = [(e.asset_key.to_user_string(), e.check_name) for e in evaluations if not e.passed]
    assert failed == []
    names = {e.check_name for e in evaluations}
    assert {
        SURVEY_UNIQUE_TEST,
        "balance_equals_ledger_sum",
        "no_negative_balance",
        "model_fit_is_sane",
        "one_prediction_per_customer",
    } <= names


@pytest.mark.slow
def test_full_build_checks_the_freshness_of_raw_data_and_marts(defs, full_build):
    """The demo data was just generated: every freshness check ran (the full build's test
    above asserts that every check passed), and the orders check states the newest order."""
    result, _warehouse = full_build
    evaluations = check_evaluations(result)
    fresh = {e.asset_key for e in evaluations if e.check_name == "raw_data_is_fresh"}
    assert key("raw/orders") in fresh and key("raw/survey_responses") in fresh
    marts = {k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.path[0] == "marts"}
    assert {e.asset_key for e in evaluations if e.check_name == "built_on_fresh_raw_data"} == marts
    orders = next(
        e for e in evaluations
        if e.check_name == "raw_data_is_fresh" and e.asset_key == key("raw/orders")
    )  # fmt: skip
    assert orders.passed and orders.metadata["newest_order_at"].value.startswith("2025-12")


@pytest.mark.slow
def test_full_graph_row_counts(full_build, demo_dir):
    result, warehouse = full_build
    metadata = materialized(result)
    with duckdb.connect(str(warehouse), read_only=True) as con:

        def count(table: str) -> int:
            return con.execute(f"select count(*) from {table}").fetchall()[0][0]

        # Every materialization's row count is the table's.
        for asset_key, meta in metadata.items():
            if "dagster/row_count" in meta:
                table = ".".join(asset_key.path)
                assert meta["dagster/row_count"].value == count(table), table
        # Raw = the files; staging = accepted + quarantined, per source.
        for source, accepted, rejected, superseded in STAGING_SPLITS:
            assert count(f"raw.{source}") == _csv_rows(demo_dir / f"{source}.csv"), source
            assert count(f"raw.{source}") == count(f"staging.{accepted}") + count(
                f"staging.{rejected}"
            ), source
            # one export per source: nothing superseded
            assert superseded is None or count(f"staging.{superseded}") == 0, source
        assert count("staging.order_rejects") > 0  # the dirty rows were quarantined
        assert count("raw.survey_responses") + count("raw.survey_rejects") == _survey_records(
            demo_dir / "surveys"
        )
        customers = count("staging.stg_shop__customers")
        assert count("marts.customer_tiers") >= customers * 0.9
        # The daily run wrote its as-of date into the tier history, recorded as that partition.
        as_of = metadata[key("marts/customer_tiers")]["as_of_date"].value
        assert con.execute(
            "select as_of_date::varchar, count(*) from marts.customer_tier_history group by 1"
        ).fetchall() == [(as_of, count("marts.customer_tiers"))]
        history_partitions = {
            event.partition
            for event in result.get_asset_materialization_events()
            if event.asset_key == key("marts/customer_tier_history")
        }
        assert history_partitions == {None, as_of}
        assert count("marts.loyalty_balances") > 0
        assert count("marts.loyalty_points_ledger") > count("marts.loyalty_balances")
        buyers = count("marts.customer_features where has_purchased")
        assert buyers < count("marts.customer_features")  # prospects get no prediction
        assert count("marts.customer_predictions") == buyers
        assert count("marts.clv_model_params") == 7  # r, alpha, a, b; p, q, v
        assert count("marts.prediction_backtest") > 0
    tiers = metadata[key("marts/customer_tiers")]
    assert "value_tier" in tiers["value_tier_counts"].value
    assert tiers["as_of_date"].value
    predictions = metadata[key("marts/customer_predictions")]
    assert "bg_nbd" in predictions["prediction_method_counts"].value
    report = Path(metadata[key("reports/tier_report")]["path"].value)
    assert report.is_file() and report.parent == warehouse.parent  # run config, not reports/
    crm = metadata[key("marts/crm_reminders")]
    assert "contact_address" not in crm["preview"].value.split("\n")[0]  # no personal data
    lists = metadata[key("exports/crm_contact_lists")]
    assert lists["customers"].value > 0  # the demo has consenting customers with reminders


@pytest.mark.slow
def test_the_full_build_publishes_what_it_built_and_nothing_personal(defs, full_build, demo_dir):
    """The job's last step published the serving copy beside the warehouse: after every table
    it publishes (all marts, Python ones included, but the per-date tier history; seeds), with
    exactly the warehouse's content, no personal column or schema and no e-mail or phone of the
    input."""
    result, warehouse = full_build
    out = warehouse.parent / "serving"
    graph = defs.resolve_asset_graph()
    published_layers = {"marts", "seeds"}
    history = key("marts/customer_tier_history")  # not published: BI gets its SCD2 view
    assert graph.get(key("serving")).parent_keys == {
        k for k in graph.get_all_asset_keys() if k.path[0] in published_layers and k != history
    }
    meta = materialized(result)[key("serving")]
    assert meta["version_id"].value == serving.current_version(out)
    manifest = serving.read_manifest(out)
    assert {t.split(".")[0] for t in manifest["tables"]} == published_layers
    tiers = manifest["tables"]["marts.customer_tiers"]
    assert "customer_key" in tiers["columns"] and "customer_id" not in tiers["columns"]
    assert (
        manifest["as_of_date"]
        == materialized(result)[key("marts/customer_tiers")]["as_of_date"].value
    )
    assert content_mismatches(warehouse, manifest, TEST_PII_KEY.encode()) == []
    version_dir = out / "versions" / manifest["version"]
    assert_nothing_personal(version_dir)
    values = personal_values_of(demo_dir)
    assert len(values) > 1000
    assert personal_values_found(version_dir, values) == []
    # Not even the customer ids: BI sees customer_key only.
    with (demo_dir / "customers.csv").open(newline="", encoding="utf-8") as handle:
        ids = {row["customer_id"] for row in csv.DictReader(handle)}
    assert personal_values_found(version_dir, ids) == []


def personal_values_of(raw_dir: Path, customers: set[str] | None = None) -> set[str]:
    """E-mail addresses, phone numbers, full names and birth dates of the raw customers file
    (of ``customers`` only, when given), each only when no other customer shares it (a shared
    birth date in another customer's row is not a leak): what must never be published."""
    with (raw_dir / "customers.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    owners: dict[str, set[str]] = {}
    for row in rows:
        for column in ("email", "phone", "full_name", "birth_date"):
            if len(row[column] or "") >= 3:
                owners.setdefault(row[column], set()).add(row["customer_id"])
    return {
        value
        for value, ids in owners.items()
        if len(ids) == 1 and (customers is None or ids <= customers)
    }


@pytest.mark.slow
def test_an_erasure_request_removes_personal_values_everywhere_and_orders_still_count(
    defs, full_build, demo_dir, tmp_path
):
    """Three customers ask to be forgotten: the next run leaves none of their personal values in
    any table of any schema, any published serving version or any CRM list, the warehouse file
    is rewritten once, and their orders still count in every aggregate."""
    _result, built = full_build
    work = tmp_path / "build"
    # The warehouse, its serving copy and CRM lists; `current` is copied as the folder it
    # points to (as `cp -r` does): the next publish must cope.
    shutil.copytree(built.parent, work)
    warehouse = work / built.name
    raw = tmp_path / "raw"
    shutil.copytree(demo_dir, raw)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        erased = [
            row[0]
            for row in con.execute(
                "select customer_id from marts.crm_reminders join staging.stg_shop__customers "
                "using (customer_id) where email is not null and phone is not null "
                "and full_name is not null and birth_date is not null order by 1 limit 3"
            ).fetchall()
        ]
        totals_before = con.execute(
            "select sum(revenue), sum(orders_count) from marts.customer_features"
        ).fetchone()
    assert len(erased) == 3
    values = personal_values_of(raw, set(erased))
    assert len(values) >= 6
    exported = "".join(p.read_text() for p in (work / "exports").rglob("*.csv"))
    assert any(value in exported for value in values)  # they were on a CRM list before
    (raw / privacy.ERASURE_FILE).write_text("customer_id,requested_at\n" + "".join(
        f"{customer},2025-07-01\n" for customer in erased
    ))  # fmt: skip

    result = run_job(defs, raw, warehouse)
    assert result.success, step_failures(result)
    assert materialized(result)[key("privacy/erasure")]["warehouse_rewritten"].value is True

    hits = []
    with duckdb.connect(str(warehouse), read_only=True) as con:
        columns = con.execute(
            "select schema_name, table_name, column_name from duckdb_columns() "
            "where data_type in ('VARCHAR', 'DATE') order by 1, 2, 3"
        ).fetchall()
        for schema, table, column in columns:  # every value of every text or date column
            hits += [
                f"{schema}.{table}.{column}: {row[0]}"
                for row in con.execute(
                    f'select distinct cast("{column}" as varchar) from "{schema}"."{table}" '
                    f'where cast("{column}" as varchar) in (select unnest(?))',
                    [sorted(values)],
                ).fetchall()
            ]
        totals_after = con.execute(
            "select sum(revenue), sum(orders_count) from marts.customer_features"
        ).fetchone()
        still_there = con.execute(
            "select count(*) from marts.customer_features where customer_id in (?, ?, ?) "
            "and orders_count > 0",
            erased,
        ).fetchone()[0]
        compacted = con.execute(
            "select count(*) from raw.erasure_requests where compacted_at is not null"
        ).fetchone()[0]
    assert hits == []
    for version in (work / "serving" / "versions").iterdir():  # the old ones too
        assert personal_values_found(version, values) == [], version.name
    for path in (work / "exports").rglob("*.csv"):
        assert not [v for v in values if v in path.read_text()], path
    assert (
        totals_after == totals_before and still_there == 3 and compacted == 3
    )  # a second run compacts nothing: tests/test_privacy.py


@pytest.mark.slow
def test_loyalty_invariants_hold_on_the_full_build(full_build):
    _result, warehouse = full_build
    with duckdb.connect(str(warehouse), read_only=True) as con:
        mismatched = con.execute(
            f"""
            select count(*) from {loyalty.BALANCES_TABLE} as balances
            full outer join (
                select customer_id, sum(points) as points from {loyalty.LEDGER_TABLE} group by 1
            ) as ledger using (customer_id)
            where balances.points_balance is distinct from ledger.points
            """
        ).fetchall()[0][0]
        assert mismatched == 0
        lowest_running = con.execute(
            f"""
            select min(running) from (
                select sum(points) over (
                    partition by customer_id order by movement_seq
                ) as running
                from {loyalty.LEDGER_TABLE}
            )
            """
        ).fetchall()[0][0]
        assert lowest_running >= 0
        as_of = con.execute("select max(as_of_date) from intermediate.int_as_of_date").fetchall()
        requests = con.execute(
            "select count(*) from staging.stg_shop__redemptions "
            "where cast(redeemed_at as date) <= ?",
            [as_of[0][0]],
        ).fetchall()[0][0]
        redeemed = con.execute(
            f"select count(*) from {loyalty.LEDGER_TABLE} where movement_type = 'redeem'"
        ).fetchall()[0][0]
        refused = con.execute(f"select count(*) from {loyalty.REJECTS_TABLE}").fetchall()[0][0]
        # Every redemption request is either in the ledger or refused with a reason.
        assert redeemed + refused == requests
        assert refused > 0  # the demo data's deliberate over-redemptions


@pytest.mark.slow
def test_a_failing_blocking_check_stops_what_depends_on_it(defs, full_build, demo_dir, tmp_path):
    """A duplicated survey response in raw (a corrupt table, as from a bad manual fix) fails
    the ERROR test unique(response_id) on stg_surveys__responses: dbt skips the models built
    on it, Dagster fails the dbt step and starts none of the Python assets after it (the
    predictions are built on customer_features, which depends on the surveys), and their
    tables from the previous build stay exactly as they were. Nothing is published: the
    serving copy's ``current`` stays on the full build's version."""
    _result, built = full_build
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(built, warehouse)
    # The full build's serving copy, beside the warehouse as CW_SERVING_DIR defaults to.
    shutil.copytree(built.parent / "serving", tmp_path / "serving", symlinks=True)
    published = serving.current_version(tmp_path / "serving")
    assert published is not None
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            "insert into raw.survey_responses (response_id, customer_id, submitted_at, nps, "
            "satisfaction, source_file, source_row) values "
            "('dup-1', 'C0000001', timestamp '2025-01-01 10:00:00', 9, 5, 'manual.csv', 1), "
            "('dup-1', 'C0000002', timestamp '2025-01-02 10:00:00', 3, 2, 'manual.csv', 2)"
        )
    python_tables = [*LOYALTY_OUTPUTS, *PREDICTION_TABLES]
    before = table_fingerprints(warehouse, python_tables)

    result = run_job(defs, demo_dir, warehouse)

    assert not result.success
    failed = [e for e in check_evaluations(result) if not e.passed]
    assert [(e.asset_key, e.check_name) for e in failed] == [
        (key("staging/stg_surveys__responses"), SURVEY_UNIQUE_TEST)
    ]
    assert "dbt_models" in step_failures(result)
    done = set(materialized(result))
    assert key("raw/orders") in done  # upstream of the failure: built
    assert key("staging/stg_surveys__responses") in done  # built, then its test failed
    assert key("intermediate/int_survey_responses_aggregated_to_customers") not in done
    assert key("marts/customer_features") not in done
    for table in python_tables:
        assert key(table.replace(".", "/")) not in done, table
    assert table_fingerprints(warehouse, python_tables) == before
    # The serving step never started ("Dependencies for step serving failed: ['dbt_models']");
    # readers keep the last good version; the run's failure names the failed test.
    assert key("serving") not in done
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "dbt_models" in started and "serving" not in started
    assert SURVEY_UNIQUE_TEST in step_failures(result)["dbt_models"]
    assert serving.current_version(tmp_path / "serving") == published
    assert serving.list_versions(tmp_path / "serving") == [published]


# Columns that record when a run happened, not what it computed.
RUN_TIME_COLUMNS = {"computed_at", "ingested_at", "loaded_at", "verified_at"}


def content_fingerprints(warehouse: Path) -> dict[str, tuple]:
    """Row count and an order-independent hash of every table's content, per table."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = con.execute(
            "select table_schema || '.' || table_name from information_schema.tables "
            "where table_schema in ('raw', 'staging', 'intermediate', 'marts') "
            "and table_type = 'BASE TABLE' order by 1"
        ).fetchall()
        out = {}
        for (table,) in tables:
            columns = [c[0] for c in con.execute(f"describe {table}").fetchall()]
            kept = ", ".join(f'"{c}"' for c in columns if c not in RUN_TIME_COLUMNS)
            out[table] = tuple(
                con.execute(
                    f"select count(*), sum(hash(t)) from (select {kept} from {table}) as t"
                ).fetchall()[0]
            )
        return out


@pytest.mark.slow
def test_running_the_job_twice_gives_the_same_tables(defs, full_build, demo_dir, tmp_path):
    """Reruns are idempotent: the same raw files and as-of date give the same content in every
    table (the tier history's rows of the as-of date are replaced by the same rows; only run
    timestamps differ)."""
    _result, built = full_build
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(built, warehouse)
    before = content_fingerprints(warehouse)
    assert "marts.customer_tiers" in before and "marts.customer_tier_history" in before

    result = run_job(defs, demo_dir, warehouse)

    assert result.success
    after = content_fingerprints(warehouse)
    changed = sorted(t for t in before if before[t] != after.get(t))
    assert changed == []
    assert set(after) == set(before)


@pytest.mark.slow
def test_a_rejected_model_fit_falls_back_and_says_why(defs, full_build, demo_dir, tmp_path):
    """A fit outside the sane ranges (here: ranges tightened so the real fit falls outside them)
    does not fail the run: the predictions use the naive_rate fallback, clv_model_params records
    the status and the reason quoting the parameter, the WARN check fails with it and the
    blocking checks pass."""
    _result, built = full_build
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(built, warehouse)

    result = run_job(
        defs,
        demo_dir,
        warehouse,
        selection=[key("marts/customer_predictions"), key("marts/clv_model_params")],
        ops_config={"customer_predictions": {"config": {"sane_bounds": {"r": [100.0, 1000.0]}}}},
    )

    assert result.success
    evaluations = {e.check_name: e for e in check_evaluations(result)}
    for name in ("model_fit_is_sane", "one_prediction_per_customer", "predictions_are_finite"):
        assert evaluations[name].passed, name
    warn = evaluations["predictions_use_fitted_models"]
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    assert "parameter r" in warn.description
    assert set(materialized(result)) == {
        key("marts/customer_predictions"),
        key("marts/clv_model_params"),
    }
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "select model, fit_status, status_reason like '%parameter r = %', parameter "
            "from marts.clv_model_params order by model"
        ).fetchall()
        assert rows == [
            ("bg_nbd", "fallback", True, None),
            ("gamma_gamma", "not_attempted", False, None),
        ]
        methods = con.execute(
            "select distinct prediction_method from marts.customer_predictions"
        ).fetchall()
        assert methods == [("naive_rate",)]


# --------------------------------------------------------------------------------------------
# The CLI sees the same definitions
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dagster_definitions_validate_passes(defs, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CW_")}
    env["DAGSTER_HOME"] = str(tmp_path)
    shutil.copy(PROJECT_DIR / "orchestration" / "dagster.yaml", tmp_path / "dagster.yaml")
    dagster = str(Path(sys.executable).parent / "dagster")
    proc = subprocess.run(
        [dagster, "definitions", "validate", "-m", "orchestration.definitions"],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "Validation successful" in output
