"""Freshness of the raw inputs and the marts: the age rules (``customer_warehouse.freshness``), the
WARN checks a real run of the raw step and of the marts' check step gives on fresh and on stale
files, the run tag, and the marts' Dagster freshness policy.

Stale files are made stale with ``os.utime`` (their modification time set days back), and "now"
is passed explicitly where the rule is tested on its own, so no test depends on the clock.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from customer_warehouse import freshness
from customer_warehouse.config import MAX_RAW_AGE_VARIABLE
from orchestration.defs.freshness.checks import (
    MART_CHECK,
    RAW_CHECK,
    STALE_TAG,
    build_mart_freshness_checks,
    mart_freshness_policy,
    with_mart_freshness_policy,
)
from orchestration.defs.raw.assets import raw_files
from orchestration.defs.resources import WarehouseResource

from .conftest import FIXTURES
from .dagster_job import point_settings_at

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _touch(path: Path, moment: datetime) -> Path:
    os.utime(path, (moment.timestamp(), moment.timestamp()))
    return path


# --------------------------------------------------------------------------------------------
# The rule
# --------------------------------------------------------------------------------------------


def test_the_newest_file_of_a_source_decides_single_export_or_deliveries(tmp_path):
    _touch(_write(tmp_path / "orders.csv"), NOW - timedelta(hours=50))
    deliveries = tmp_path / "orders"
    deliveries.mkdir()
    _touch(_write(deliveries / "2026-02-27.csv"), NOW - timedelta(hours=40))
    newest = _touch(_write(deliveries / "2026-02-28.parquet"), NOW - timedelta(hours=20))
    _touch(_write(deliveries / ".2026-03-01.csv.partial"), NOW)  # hidden: being written
    _touch(_write(deliveries / "notes.txt"), NOW)  # not an export

    age = freshness.source_age(tmp_path, "orders", max_age_hours=36, now=NOW)
    assert age.newest_file == newest
    assert age.age_hours == pytest.approx(20.0)
    assert not age.stale
    assert "2026-02-28.parquet" in age.describe() and "20.0 h" in age.describe()


def test_a_source_older_than_the_limit_is_stale_and_says_what_to_do(tmp_path):
    _touch(_write(tmp_path / "customers.parquet"), NOW - timedelta(hours=36, minutes=6))
    age = freshness.source_age(tmp_path, "customers", max_age_hours=36, now=NOW)
    assert age.stale and age.age_hours == pytest.approx(36.1)
    text = age.describe()
    assert MAX_RAW_AGE_VARIABLE in text and "36.1 h" in text and "export job" in text
    # Exactly at the limit is still fresh.
    exact = freshness.source_age(tmp_path, "customers", 36.1, now=NOW)
    assert not exact.stale


def test_an_absent_optional_source_is_never_stale(tmp_path):
    age = freshness.source_age(tmp_path, "redemptions", max_age_hours=1, now=NOW)
    assert age.newest_file is None and age.age_hours is None and not age.stale
    assert freshness.stale_summary([age]) is None


def test_survey_files_count_for_the_surveys(tmp_path):
    surveys = tmp_path / "surveys"
    surveys.mkdir()
    _touch(_write(surveys / "2026-01.json", "[]"), NOW - timedelta(days=40))
    _touch(_write(surveys / "2026-02.csv"), NOW - timedelta(days=3))
    ages = freshness.source_ages(tmp_path, ["surveys", "orders"], 48, now=NOW)
    assert ages[0].newest_file.name == "2026-02.csv" and ages[0].stale
    assert ages[1].newest_file is None
    summary = freshness.stale_summary(ages)
    assert summary == f"stale raw data: surveys 72.0 h old (limit {MAX_RAW_AGE_VARIABLE}=48 h)"


def test_newest_order_timestamp_reads_offsets_as_utc_and_skips_the_future():
    with duckdb.connect() as con:
        con.execute("create schema raw; create table raw.orders (ordered_at varchar)")
        con.execute(
            "insert into raw.orders values ('2026-02-27T09:30:00+08:00'), "
            "('2026-02-27 03:00:00'), ('2026-02-20'), ('not a time'), (null), "
            "('2026-03-05 00:00:00')"  # after "now": a typo, not the newest order
        )
        assert freshness.newest_order_at(con, now=NOW) == datetime(2026, 2, 27, 3, 0, tzinfo=UTC)
        con.execute("set TimeZone = 'America/New_York'")  # the session zone does not matter
        assert freshness.newest_order_at(con, now=NOW) == datetime(2026, 2, 27, 3, 0, tzinfo=UTC)
        con.execute("delete from raw.orders")
        assert freshness.newest_order_at(con, now=NOW) is None


# --------------------------------------------------------------------------------------------
# The checks in real Dagster runs
# --------------------------------------------------------------------------------------------


@pytest.fixture
def raw_env(tmp_path, monkeypatch) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(FIXTURES / "minimal", raw)
    _touch(raw / "orders.csv", datetime.now(UTC))  # delivered just now (copytree keeps times)
    point_settings_at(monkeypatch, raw, tmp_path / "warehouse.duckdb")
    return raw


def _checks(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], object]:
    return {
        (e.event_specific_data.asset_key.to_user_string(), e.event_specific_data.check_name): (
            e.event_specific_data
        )
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def _materialize_raw(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [raw_files], resources={"warehouse": WarehouseResource()}, instance=instance
    )


def test_raw_step_passes_on_fresh_files_and_states_the_ages(raw_env):
    with dg.instance_for_test() as instance:
        result = _materialize_raw(instance)
        tags = instance.get_run_by_id(result.run_id).tags
    assert result.success
    checks = _checks(result)
    orders = checks[("raw/orders", RAW_CHECK)]
    assert orders.passed and orders.severity == dg.AssetCheckSeverity.WARN
    meta = orders.metadata
    assert meta["newest_file"].value.endswith("orders.csv")
    assert meta["file_age_hours"].value < 0.1 and meta["max_age_hours"].value == 36
    assert meta["newest_order_at"].value.startswith("20")  # the fixture's newest order
    assert meta["newest_order_age_hours"].value > 0
    # Sources without a file pass ("nothing to be late"), every raw source has the check.
    assert {key for key, name in checks if name == RAW_CHECK} == {
        "raw/orders", "raw/customers", "raw/order_items", "raw/products", "raw/redemptions",
        "raw/point_adjustments",
    }  # fmt: skip
    assert all(c.passed for (_, name), c in checks.items() if name == RAW_CHECK)
    assert STALE_TAG not in tags


def test_raw_step_warns_on_stale_files_in_the_checks_the_log_and_the_run_tag(raw_env, monkeypatch):
    monkeypatch.setenv(MAX_RAW_AGE_VARIABLE, "24")
    _touch(raw_env / "orders.csv", datetime.now(UTC) - timedelta(hours=50))
    with dg.instance_for_test() as instance:
        result = _materialize_raw(instance)
        tags = instance.get_run_by_id(result.run_id).tags
        logs = [
            record.event_log_entry.user_message
            for record in instance.get_records_for_run(result.run_id).records
            if record.event_log_entry.level == 30  # logging.WARNING
        ]
    assert result.success  # a warning, not a failure: the run goes on
    orders = _checks(result)[("raw/orders", RAW_CHECK)]
    assert not orders.passed and orders.severity == dg.AssetCheckSeverity.WARN
    assert orders.metadata["file_age_hours"].value == pytest.approx(50, abs=0.1)
    assert orders.metadata["max_age_hours"].value == 24
    assert MAX_RAW_AGE_VARIABLE in orders.description
    assert tags[STALE_TAG].startswith("stale raw data: orders 50.0 h old")
    assert any("orders.csv" in line and "stale" in line for line in logs)


def test_marts_check_warns_when_the_raw_data_is_stale_and_names_the_as_of_date(raw_env):
    warehouse = Path(os.environ["CW_WAREHOUSE_PATH"])
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema intermediate")
        con.execute(
            "create table intermediate.int_as_of_date as select date '2026-02-28' as as_of_date"
        )
    mart = dg.AssetKey(["marts", "customer_tiers"])

    @dg.asset(key=mart)
    def customer_tiers() -> None:
        """Stands in for the dbt mart: the check reads the raw folder and the as-of date."""

    checks = build_mart_freshness_checks([mart], ["orders", "customers", "surveys"])

    def run() -> object:
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                [customer_tiers, checks],
                resources={"warehouse": WarehouseResource()},
                instance=instance,
            )
        assert result.success
        return _checks(result)[("marts/customer_tiers", MART_CHECK)]

    fresh = run()
    assert fresh.passed and "2026-02-28" in fresh.description
    _touch(raw_env / "orders.csv", datetime.now(UTC) - timedelta(days=3))
    stale = run()
    assert not stale.passed and stale.severity == dg.AssetCheckSeverity.WARN
    assert stale.metadata["stale_sources"].value == ["orders"]
    assert stale.metadata["as_of_date"].value == "2026-02-28"
    assert "orders 72.0 h" in stale.description and "as of 2026-02-28" in stale.description


def test_marts_get_a_time_window_freshness_policy_and_nothing_else_does():
    @dg.multi_asset(specs=[dg.AssetSpec(["marts", "a"]), dg.AssetSpec(["staging", "b"])])
    def mixed():
        """A dbt-like multi-asset: one mart, one staging table."""

    @dg.asset(key=["raw", "orders"])
    def orders() -> None:
        """Not a mart."""

    policy = mart_freshness_policy(36)
    mapped = with_mart_freshness_policy([mixed, orders], policy)
    specs = {spec.key.to_user_string(): spec for a in mapped for spec in a.specs}
    assert specs["marts/a"].freshness_policy == policy
    assert specs["staging/b"].freshness_policy is None
    assert specs["raw/orders"].freshness_policy is None
    assert policy.warn_window.to_timedelta() == timedelta(hours=36)
    assert policy.fail_window.to_timedelta() == timedelta(hours=72)


def _write(path: Path, text: str = "x\n") -> Path:
    path.write_text(text)
    return path
