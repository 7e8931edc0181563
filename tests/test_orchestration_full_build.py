"""The Dagster asset graph built in full, in-process on demo data: every asset and check, row
counts, the published serving copy, an erasure request, the loyalty invariants, a failing
blocking check stopping what depends on it, a second run, a rejected model fit, and the CLI's
validation of the same definitions.

Everything runs against temporary folders: a tmp DuckDB file per build, a tmp dbt target path
for the whole module (the manifest is parsed there once), an ephemeral Dagster instance."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from customer_warehouse import loyalty, privacy, serving
from orchestration.defs.loyalty.assets import LOYALTY_OUTPUTS

from .conftest import PROJECT_DIR, STAGING_SPLITS
from .dagster_job import (
    TEST_PII_KEY,
    check_evaluations,
    materialized,
    run_job,
    step_failures,
    table_fingerprints,
)
from .orchestration_helpers import (
    PREDICTION_TABLES,
    SURVEY_UNIQUE_TEST,
    _csv_rows,
    _survey_records,
    content_fingerprints,
    key,
    personal_values_of,
)
from .serving_checks import assert_nothing_personal, content_mismatches, personal_values_found

pytestmark = pytest.mark.usefixtures("dbt_paths")

#: MetricFlow's time spine holds every day from 1970 to 2050, so every birth date too; a day
#: of the calendar belongs to nobody, so the erasure scan skips it.
CALENDAR = ("semantic", "metricflow_time_spine")


@pytest.fixture(scope="module")
def full_build(defs, demo_dir, tmp_path_factory):
    """The whole graph materialized once (job full_refresh) into a tmp warehouse."""
    warehouse = tmp_path_factory.mktemp("full") / "warehouse.duckdb"
    return run_job(defs, demo_dir, warehouse), warehouse


# --------------------------------------------------------------------------------------------
# The full graph, in-process, on demo data
# --------------------------------------------------------------------------------------------


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
            if (schema, table) == CALENDAR:
                continue
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
