"""The serving copy: the atomic switch, pruning, a killed publish's leftovers, a failing publish,
a reader that keeps its old version open, the settings, SQLAlchemy (duckdb_engine) and the
Dagster asset alone, on small warehouses written in SQL (tests/serving_helpers.py)."""

from __future__ import annotations

import os
import time

import dagster as dg
import duckdb
import pytest
import sqlalchemy as sa

from customer_warehouse import serving
from customer_warehouse.config import ConfigError, load_settings
from orchestration.defs.resources import WarehouseResource
from orchestration.defs.serving.assets import SERVING_KEY, build_serving_asset

from .dagster_job import TEST_PII_KEY, materialized, step_failures
from .serving_helpers import KEY, NEVER

# --------------------------------------------------------------------------------------------
# Switch, prune, leftovers, failures
# --------------------------------------------------------------------------------------------


def test_prune_keeps_the_newest_versions_and_never_the_current_one(warehouse, tmp_path):
    out = tmp_path / "serving"
    published = [serving.publish(warehouse, out, keep=2, key=KEY) for _ in range(4)]
    ids = [v.id for v in published]
    assert serving.list_versions(out) == ids[-2:]
    assert published[2].pruned == (ids[0],) and published[3].pruned == (ids[1],)

    serving.switch_to(out, ids[2])  # a rollback by hand
    assert serving.current_version(out) == ids[2]
    assert (out / "CURRENT").read_text().strip() == ids[2]
    pruned, _ = serving.prune(out, keep=1)
    assert pruned == []  # ids[3] is the newest, ids[2] is current: both stay
    assert serving.list_versions(out) == ids[2:]
    with pytest.raises(serving.ServingError, match="no complete version"):
        serving.switch_to(out, ids[0])


def test_a_killed_publish_leaves_nothing_visible_and_is_cleaned_up(warehouse, tmp_path):
    out = tmp_path / "serving"
    first = serving.publish(warehouse, out, key=KEY)
    # What a publish killed part-way leaves: a partial version and a temp symlink.
    stale = out / "versions" / f"{serving.new_version_id([first.id])}.partial"
    (stale / "parquet").mkdir(parents=True)
    (stale / "serving.duckdb").write_bytes(b"half a file")
    os.symlink("versions/nowhere", out / ".current.tmp-dead")
    assert serving.current_version(out) == first.id
    assert serving.list_versions(out) == [first.id]  # a partial is never a version

    second = serving.publish(warehouse, out, key=KEY)
    assert second.removed_partials == (stale.name,)
    assert not stale.exists() and not (out / ".current.tmp-dead").is_symlink()
    assert serving.current_version(out) == second.id


def test_a_failing_publish_keeps_the_current_version(warehouse, tmp_path):
    out = tmp_path / "serving"
    first = serving.publish(warehouse, out, key=KEY)
    broken = serving.PlannedTable("marts.customer_tiers", {"customer_id": "no_such_column"})
    with pytest.raises(duckdb.Error):
        serving.publish(warehouse, out, tables=[broken], key=KEY)
    assert serving.current_version(out) == first.id
    assert serving.list_versions(out) == [first.id]
    assert [p.name for p in (out / "versions").iterdir()] == [first.id]


def test_a_reader_keeps_its_old_version_after_a_switch_and_after_pruning(warehouse, tmp_path):
    out = tmp_path / "serving"
    first = serving.publish(warehouse, out, keep=1, key=KEY)
    reader = duckdb.connect(str(out / "current" / "serving.duckdb"), read_only=True)
    try:
        assert reader.execute("select count(*) from marts.customer_tiers").fetchone()[0] == 10
        with duckdb.connect(str(warehouse)) as con:
            con.execute("insert into marts.customer_tiers select * from marts.customer_tiers")
        second = serving.publish(warehouse, out, keep=1, key=KEY)
        assert second.pruned == (first.id,) and not first.path.exists()
        # The old file is gone from the folder, not from the reader: same answers as before.
        assert reader.execute("select count(*) from marts.customer_tiers").fetchone()[0] == 10
        assert reader.execute("select version_id from manifest.version").fetchone()[0] == first.id
        checksum = serving.table_checksum(reader, "marts.customer_tiers")
        assert checksum == (10, first.tables["marts.customer_tiers"]["checksum"])
    finally:
        reader.close()
    with duckdb.connect(str(out / "current" / "serving.duckdb"), read_only=True) as fresh:
        assert fresh.execute("select count(*) from marts.customer_tiers").fetchone()[0] == 20


def test_one_publish_at_a_time_per_folder(tmp_path):
    with serving.publish_lock(tmp_path):
        started = time.monotonic()
        with (
            pytest.raises(serving.ServingError, match=f"process {os.getpid()}"),
            serving.publish_lock(tmp_path, timeout=0.6),
        ):
            pass
        assert time.monotonic() - started >= 0.5
    with serving.publish_lock(tmp_path, timeout=0.6):  # released
        pass


def test_a_path_with_quotes_is_not_sql(warehouse, tmp_path):
    out = tmp_path / "it's; drop table x --"
    version = serving.publish(warehouse, out, key=KEY)
    assert (version.path / "parquet" / "marts" / "customer_tiers.parquet").is_file()


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def test_serving_settings_default_beside_the_warehouse_and_are_checked(tmp_path):
    base = {"CW_RAW_DIR": str(tmp_path), "CW_WAREHOUSE_PATH": str(tmp_path / "w.duckdb")}
    settings = load_settings(base)
    assert settings.serving_path == tmp_path.resolve() / "serving"
    assert settings.serving_keep == 3
    chosen = load_settings(base | {"CW_SERVING_DIR": str(tmp_path / "bi"), "CW_SERVING_KEEP": "5"})
    assert chosen.serving_path == (tmp_path / "bi").resolve() and chosen.serving_keep == 5

    (tmp_path / "a_file").write_text("x")
    for env, words in [
        ({"CW_SERVING_DIR": str(tmp_path / "a_file")}, "is a file"),
        ({"CW_SERVING_DIR": str(tmp_path / "missing" / "bi")}, "does not exist"),
        ({"CW_SERVING_KEEP": "0"}, "whole number"),
        ({"CW_SERVING_KEEP": "three"}, "whole number"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_settings(base | env)
        assert next(iter(env)) in str(err.value) and words in str(err.value)


# --------------------------------------------------------------------------------------------
# SQLAlchemy (duckdb_engine), as docs/bi.md describes it
# --------------------------------------------------------------------------------------------


def test_sqlalchemy_reads_the_current_version_read_only(warehouse, tmp_path):
    out = tmp_path / "serving"
    serving.publish(warehouse, out, key=KEY)
    path = (out / "current" / "serving.duckdb").absolute()
    engine = sa.create_engine(f"duckdb:///{path}", connect_args={"read_only": True})
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            schemas = {name.split(".")[-1] for name in inspector.get_schema_names()}
            assert {"marts", "seeds", "manifest"} <= schemas
            assert "snapshots" not in schemas  # the old dbt snapshot is not published
            assert not schemas & NEVER
            assert set(inspector.get_table_names(schema="marts")) == {
                "crm_reminders",
                "customer_tiers",
                "customer_tiers_history",
                "tier_summary",
            }
            columns = {
                c["name"]: c for c in inspector.get_columns("customer_tiers", schema="marts")
            }
            assert list(columns) == ["customer_key", "value_tier", "lifecycle_stage", "revenue"]
            assert isinstance(columns["revenue"]["type"], sa.Numeric)
            crm = [c["name"] for c in inspector.get_columns("crm_reminders", schema="marts")]
            assert "contact_address" not in crm
            rows = conn.execute(
                sa.text(
                    "select value_tier, count(*) as customers from marts.customer_tiers "
                    "where revenue >= :floor group by 1 order by 1"
                ),
                {"floor": 0},
            ).all()
            assert sum(row.customers for row in rows) == 10
            with pytest.raises(sa.exc.DBAPIError, match="read-only"):
                conn.execute(sa.text("create table marts.mine (x int)"))
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------
# The Dagster asset alone (dagster.materialize), on the SQL warehouse
# --------------------------------------------------------------------------------------------


def test_the_asset_publishes_with_metadata(warehouse, tmp_path, monkeypatch):
    monkeypatch.setenv("CW_RAW_DIR", str(tmp_path))
    monkeypatch.setenv("CW_WAREHOUSE_PATH", str(warehouse))
    monkeypatch.setenv("CW_SERVING_KEEP", "1")
    monkeypatch.setenv("CW_PII_KEY", TEST_PII_KEY)
    for name in ("CW_SERVING_DIR", "CW_AS_OF_DATE"):
        monkeypatch.delenv(name, raising=False)
    asset = build_serving_asset([])
    first = dg.materialize([asset], resources={"warehouse": WarehouseResource()})
    second = dg.materialize([asset], resources={"warehouse": WarehouseResource()})
    assert first.success and second.success
    meta = materialized(second)[SERVING_KEY]
    out = tmp_path / "serving"  # beside the warehouse file
    version_id = meta["version_id"].value
    assert serving.current_version(out) == version_id
    assert meta["path"].value == str(out / "versions" / version_id)
    assert meta["as_of_date"].value == "2025-06-30"
    assert meta["table_count"].value == 5
    assert "| marts.crm_reminders | 10 |" in meta["tables"].value
    assert meta["pruned_versions"].value == [materialized(first)[SERVING_KEY]["version_id"].value]


def test_an_unreadable_warehouse_fails_the_asset_without_retries(tmp_path, monkeypatch):
    monkeypatch.setenv("CW_RAW_DIR", str(tmp_path))
    monkeypatch.setenv("CW_WAREHOUSE_PATH", str(tmp_path / "missing.duckdb"))
    result = dg.materialize(
        [build_serving_asset([])],
        resources={"warehouse": WarehouseResource()},
        raise_on_error=False,
    )
    assert not result.success
    assert "STEP_UP_FOR_RETRY" not in {e.event_type_value for e in result.all_events}
    assert "Publishing the serving copy failed" in " ".join(step_failures(result).values())
    assert serving.current_version(tmp_path / "serving") is None
