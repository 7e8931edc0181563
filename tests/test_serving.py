"""The serving copy: the publish module and the SQLAlchemy path.

Module tests (fast) run on small warehouses written in SQL: what is published and what never
is, the layout, the manifest and its checksums, the atomic switch, pruning, a killed publish's
leftovers, a reader that keeps its old version open.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa

from customer_warehouse import serving
from customer_warehouse.config import ConfigError, load_settings
from orchestration.defs.metadata import PERSONAL_COLUMNS as PREVIEW_PERSONAL_COLUMNS

from .conftest import PROJECT_DIR

NEVER = {"raw", "staging", "intermediate"}
PERSONAL_TEST = PROJECT_DIR / "tests" / "dbt" / "marts" / "assert_no_personal_data_in_marts.sql"


# --------------------------------------------------------------------------------------------
# A small warehouse in SQL: every schema, personal data where the real one has it
# --------------------------------------------------------------------------------------------


def make_warehouse(path: Path, customers: int = 10, *, descending: bool = False) -> Path:
    """A warehouse with the shapes the serving copy cares about; ``descending`` stores the same
    rows in the opposite order."""
    order = "desc" if descending else "asc"
    with duckdb.connect(str(path)) as con:
        for schema in ("raw", "staging", "intermediate", "marts", "seeds", "snapshots"):
            con.execute(f"create schema {schema}")
        con.execute("create table raw.orders as select 'o1' as order_id, 'a@x.cn' as email")
        con.execute(
            "create table staging.stg_shop__customers as "
            "select 'c0' as customer_id, 'a@x.cn' as email, 'Li Lei' as full_name"
        )
        con.execute(
            "create table intermediate.int_customer_contacts_filtered_to_consent as "
            "select 'c0' as customer_id, 'a@x.cn' as email"
        )
        con.execute(
            "create table intermediate.int_as_of_date as select date '2025-06-30' as as_of_date"
        )
        con.execute(
            f"""
            create table marts.customer_tiers as
            select 'c' || i as customer_id,
                   ['high_value', 'mid_value', 'low_value'][i % 3 + 1] as value_tier,
                   ['active', 'lapsed'][i % 2 + 1] as lifecycle_stage,
                   cast(i * 10.5 as decimal(18, 2)) as revenue
            from range({customers}) as r(i) order by i {order}
            """
        )
        con.execute(
            """
            create table marts.tier_summary as
            select 'value_tier' as dimension, value_tier as segment, count(*) as customers
            from marts.customer_tiers group by all
            union all
            select 'lifecycle_stage', lifecycle_stage, count(*)
            from marts.customer_tiers group by all
            """
        )
        con.execute(
            "create table marts.crm_reminders as select customer_id, 'win_back' as list_name, "
            "customer_id || '@mail.example' as contact_address from marts.customer_tiers"
        )
        con.execute(
            "create table seeds.value_tier_rules as "
            "select * from (values ('high_value', 1000), ('mid_value', 100)) t(value_tier, floor)"
        )
        con.execute(
            "create table snapshots.customer_tiers_snapshot as select customer_id, value_tier, "
            "timestamp '2025-06-30 00:00:00' as dbt_valid_from from marts.customer_tiers"
        )
    return path


@pytest.fixture
def warehouse(tmp_path) -> Path:
    return make_warehouse(tmp_path / "warehouse.duckdb")


def published_schemas_and_columns(duckdb_file: Path) -> dict[str, list[str]]:
    with duckdb.connect(str(duckdb_file), read_only=True) as con:
        rows = con.execute(
            "select table_schema || '.' || table_name, list(column_name order by ordinal_position) "
            "from information_schema.columns group by 1 order by 1"
        ).fetchall()
    return dict(rows)


def assert_nothing_personal(version_dir: Path) -> None:
    """No raw/staging/intermediate table and no column named like personal data, in the
    DuckDB file or any Parquet file of a published version."""
    tables = published_schemas_and_columns(version_dir / serving.DUCKDB_FILE)
    assert {t.split(".")[0] for t in tables} <= {"marts", "seeds", "snapshots", "manifest"}
    parquet = sorted((version_dir / serving.PARQUET_DIR).rglob("*.parquet"))
    assert {p.parent.name for p in parquet} <= {"marts", "seeds", "snapshots"}
    with duckdb.connect() as con:
        for path in parquet:
            tables[f"parquet:{path.parent.name}.{path.stem}"] = [
                row[0]
                for row in con.execute(
                    "describe select * from read_parquet(?)", [str(path)]
                ).fetchall()
            ]
    offenders = [
        f"{table}.{column}"
        for table, columns in tables.items()
        for column in columns
        if column.lower() in serving.PERSONAL_COLUMNS
    ]
    assert offenders == []


# --------------------------------------------------------------------------------------------
# What is published
# --------------------------------------------------------------------------------------------


def test_the_rules_publish_marts_seeds_and_history_never_raw_staging_or_intermediate():
    rules = serving.load_rules()
    for table in ("marts.customer_tiers", "marts.loyalty_balances", "seeds.membership_levels",
                  "snapshots.customer_tiers_snapshot"):  # fmt: skip
        assert rules.publishes(table), table
    for table in ("raw.orders", "staging.stg_shop__customers", "intermediate.int_as_of_date",
                  "main.anything", "manifest.tables"):  # fmt: skip
        assert not rules.publishes(table), table
    assert set(rules.excluded_columns("marts.crm_reminders")) == {"contact_address"}
    assert rules.excluded_columns("marts.customer_tiers") == {}
    assert all(rule.why for rule in rules.rules)


@pytest.mark.parametrize(
    "row, message",
    [
        ("staging,*,,yes,want it", "never published"),
        ("marts,crm_reminders,contact_address,yes,want it", "column rule"),
        ("marts,*,,maybe,unsure", "yes or no"),
        ("marts,*,,yes,", "why"),
    ],
)
def test_a_rules_file_that_would_leak_is_refused(tmp_path, row, message):
    path = tmp_path / "rules.csv"
    path.write_text("schema,table,column,publish,why\n" + row + "\n", encoding="utf-8")
    with pytest.raises(serving.ServingError, match=message):
        serving.load_rules(path)


def test_a_table_rule_wins_over_its_schema(tmp_path):
    path = tmp_path / "rules.csv"
    path.write_text(
        "schema,table,column,publish,why\nmarts,*,,yes,all\nmarts,scratch,,no,not for BI\n",
        encoding="utf-8",
    )
    rules = serving.load_rules(path)
    assert rules.publishes("marts.customer_tiers")
    assert not rules.publishes("marts.scratch")


def test_the_personal_column_lists_agree():
    """The serving guard, the Dagster previews and the dbt test share one list of names."""
    sql = PERSONAL_TEST.read_text(encoding="utf-8")
    block = re.search(r"personal_columns = \[(.*?)\]", sql, re.S).group(1)
    assert set(re.findall(r"'(\w+)'", block)) == serving.PERSONAL_COLUMNS
    assert serving.PERSONAL_COLUMNS == PREVIEW_PERSONAL_COLUMNS


def test_published_columns_is_the_column_hook():
    columns = ["customer_id", "list_name", "contact_address"]
    assert serving.published_columns("marts.crm_reminders", columns) == {
        "customer_id": '"customer_id"',
        "list_name": '"list_name"',
    }
    assert list(serving.published_columns("marts.customer_tiers", ["a", 'b"c'])) == ["a", 'b"c']
    assert serving.published_columns("marts.customer_tiers", ['b"c'])['b"c'] == '"b""c"'


def test_a_personal_column_stops_the_publish(warehouse, tmp_path):
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create table marts.leaky as select 'c1' as customer_id, 'x@y.cn' as email")
    out = tmp_path / "serving"
    with pytest.raises(serving.ServingError, match=r"marts.leaky would publish personal data"):
        serving.publish(warehouse, out)
    assert serving.current_version(out) is None
    assert serving.list_versions(out) == []
    assert list((out / serving.VERSIONS_DIR).iterdir()) == []


# --------------------------------------------------------------------------------------------
# Publishing: layout, manifest, checksums
# --------------------------------------------------------------------------------------------


def test_publish_writes_a_complete_version_and_makes_it_current(warehouse, tmp_path):
    out = tmp_path / "serving"
    version = serving.publish(warehouse, out, as_of=date(2025, 6, 30), git_rev="abc123", keep=3)

    assert version.path == out / "versions" / version.id
    assert os.readlink(out / "current") == f"versions/{version.id}"  # relative: movable
    assert (out / "CURRENT").read_text() == version.id + "\n"
    assert serving.current_version(out) == version.id
    assert [p.name for p in (out / "versions").iterdir()] == [version.id]

    manifest = json.loads((version.path / "manifest.json").read_text())
    assert manifest == version.manifest
    assert manifest["version"] == version.id
    assert manifest["as_of_date"] == "2025-06-30"
    assert manifest["git_revision"] == "abc123"
    assert manifest["duckdb_version"] == duckdb.__version__
    built = datetime.fromisoformat(manifest["built_at"].replace("Z", "+00:00"))
    assert abs((datetime.now(built.tzinfo) - built).total_seconds()) < 120
    assert set(manifest["tables"]) == {
        "marts.customer_tiers",
        "marts.tier_summary",
        "marts.crm_reminders",
        "seeds.value_tier_rules",
        "snapshots.customer_tiers_snapshot",
    }
    crm = manifest["tables"]["marts.crm_reminders"]
    assert crm["columns"] == ["customer_id", "list_name"]
    assert crm["omitted_columns"] == ["contact_address"]
    assert_nothing_personal(version.path)

    with duckdb.connect(str(out / "current" / "serving.duckdb"), read_only=True) as con:
        for table, info in manifest["tables"].items():
            assert serving.table_checksum(con, table) == (info["rows"], info["checksum"])
            parquet = version.path / info["parquet"]
            assert info["parquet"] == f"parquet/{table.replace('.', '/')}.parquet"
            assert (
                con.execute("select count(*) from read_parquet(?)", [str(parquet)]).fetchone()[0]
                == info["rows"]
            )
        # The manifest is also inside the file: one connection sees data and manifest together.
        inside = con.execute(
            "select table_name, row_count, checksum, parquet_path from manifest.tables"
        ).fetchall()
        assert sorted(inside) == sorted(
            (t, i["rows"], i["checksum"], i["parquet"]) for t, i in manifest["tables"].items()
        )
        assert con.execute("select version_id, as_of_date from manifest.version").fetchall() == [
            (version.id, date(2025, 6, 30))
        ]
        # Queries written for the warehouse run unchanged.
        assert con.execute("select count(*) from marts.customer_tiers").fetchone()[0] == 10
    assert not list(out.rglob("*.wal"))


def test_checksums_are_order_independent_and_identical_for_identical_content(tmp_path):
    ascending = make_warehouse(tmp_path / "a.duckdb")
    descending = make_warehouse(tmp_path / "d.duckdb", descending=True)
    first = serving.publish(ascending, tmp_path / "serving")
    again = serving.publish(ascending, tmp_path / "serving")
    reordered = serving.publish(descending, tmp_path / "serving")
    sums = [
        {t: (i["rows"], i["checksum"]) for t, i in v.tables.items()}
        for v in (first, again, reordered)
    ]
    assert sums[0] == sums[1] == sums[2]

    with duckdb.connect(str(descending)) as con:
        con.execute(
            "update marts.customer_tiers set revenue = revenue + 0.01 where customer_id = 'c3'"
        )
        con.execute("insert into seeds.value_tier_rules values ('mid_value', 100)")  # a duplicate
    changed = serving.publish(descending, tmp_path / "serving")
    assert (
        changed.tables["marts.customer_tiers"]["rows"]
        == first.tables["marts.customer_tiers"]["rows"]
    )
    assert (
        changed.tables["marts.customer_tiers"]["checksum"]
        != first.tables["marts.customer_tiers"]["checksum"]
    )
    assert (
        changed.tables["seeds.value_tier_rules"]["checksum"]
        != first.tables["seeds.value_tier_rules"]["checksum"]
    )
    assert changed.tables["marts.tier_summary"] == first.tables["marts.tier_summary"]


def test_version_ids_sort_by_time_and_are_unique():
    now = datetime(2025, 6, 30, 6, 0, 0, tzinfo=UTC)
    ids = []
    for _ in range(50):  # the same instant every time: still unique and increasing
        ids.append(serving.new_version_id(ids, now=now))
    assert len(set(ids)) == 50
    assert ids == sorted(ids)
    earlier = serving.new_version_id(ids, now=now - timedelta(hours=1))  # the clock went back
    assert earlier > max(ids)
    later = serving.new_version_id(ids, now=now + timedelta(days=1))
    assert later.startswith("20250701T060000.000000Z-")
    assert all(serving.VERSION_RE.match(i) for i in [*ids, earlier, later])


# --------------------------------------------------------------------------------------------
# Switch, prune, leftovers, failures
# --------------------------------------------------------------------------------------------


def test_prune_keeps_the_newest_versions_and_never_the_current_one(warehouse, tmp_path):
    out = tmp_path / "serving"
    published = [serving.publish(warehouse, out, keep=2) for _ in range(4)]
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
    first = serving.publish(warehouse, out)
    # What a publish killed part-way leaves: a partial version and a temp symlink.
    stale = out / "versions" / f"{serving.new_version_id([first.id])}.partial"
    (stale / "parquet").mkdir(parents=True)
    (stale / "serving.duckdb").write_bytes(b"half a file")
    os.symlink("versions/nowhere", out / ".current.tmp-dead")
    assert serving.current_version(out) == first.id
    assert serving.list_versions(out) == [first.id]  # a partial is never a version

    second = serving.publish(warehouse, out)
    assert second.removed_partials == (stale.name,)
    assert not stale.exists() and not (out / ".current.tmp-dead").is_symlink()
    assert serving.current_version(out) == second.id


def test_a_failing_publish_keeps_the_current_version(warehouse, tmp_path):
    out = tmp_path / "serving"
    first = serving.publish(warehouse, out)
    broken = serving.PlannedTable("marts.customer_tiers", {"customer_id": "no_such_column"})
    with pytest.raises(duckdb.Error):
        serving.publish(warehouse, out, tables=[broken])
    assert serving.current_version(out) == first.id
    assert serving.list_versions(out) == [first.id]
    assert [p.name for p in (out / "versions").iterdir()] == [first.id]


def test_a_reader_keeps_its_old_version_after_a_switch_and_after_pruning(warehouse, tmp_path):
    out = tmp_path / "serving"
    first = serving.publish(warehouse, out, keep=1)
    reader = duckdb.connect(str(out / "current" / "serving.duckdb"), read_only=True)
    try:
        assert reader.execute("select count(*) from marts.customer_tiers").fetchone()[0] == 10
        with duckdb.connect(str(warehouse)) as con:
            con.execute("insert into marts.customer_tiers select * from marts.customer_tiers")
        second = serving.publish(warehouse, out, keep=1)
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
    version = serving.publish(warehouse, out)
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
    serving.publish(warehouse, out)
    path = (out / "current" / "serving.duckdb").absolute()
    engine = sa.create_engine(f"duckdb:///{path}", connect_args={"read_only": True})
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            schemas = {name.split(".")[-1] for name in inspector.get_schema_names()}
            assert {"marts", "seeds", "snapshots", "manifest"} <= schemas
            assert not schemas & NEVER
            assert set(inspector.get_table_names(schema="marts")) == {
                "crm_reminders",
                "customer_tiers",
                "tier_summary",
            }
            columns = {
                c["name"]: c for c in inspector.get_columns("customer_tiers", schema="marts")
            }
            assert list(columns) == ["customer_id", "value_tier", "lifecycle_stage", "revenue"]
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
