"""The serving copy: the publish module, the SQLAlchemy path, the Dagster asset and a separate
reader process that reads while the warehouse is rebuilt and republished.

Module tests (fast) run on small warehouses written in SQL: what is published and what never
is, the layout, the manifest and its checksums, the atomic switch, pruning, a killed publish's
leftovers, a reader that keeps its old version open. The reader loop (slow, in ``make test``)
builds a small shop twice, growing, and publishes the two builds in turns while
``tests/serving_reader.py`` reads ``current`` in its own process; its long variant (heavy,
``make test-heavy``) runs the real Dagster job four times on a growing shop and once with a
failing blocking check. The full build of tests/test_orchestration.py publishes too: there the
published content is compared with the warehouse, scanned for personal data, and a failing
blocking check is shown to leave ``current`` untouched.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import sqlalchemy as sa

from customer_warehouse import privacy, serving
from customer_warehouse.config import ConfigError, load_settings
from orchestration.defs import build_definitions
from orchestration.defs.resources import WarehouseResource
from orchestration.defs.serving.assets import SERVING_KEY, build_serving_asset

from .conftest import PROJECT_DIR, Warehouse, build_warehouse
from .dagster_job import TEST_PII_KEY, isolated_dbt_paths, materialized, run_job, step_failures
from .serving_checks import assert_nothing_personal, content_mismatches, personal_values_found

READER = Path(__file__).resolve().with_name("serving_reader.py")
NEVER = {"raw", "staging", "intermediate"}
PERSONAL_TEST = PROJECT_DIR / "tests" / "dbt" / "marts" / "assert_no_personal_data_in_marts.sql"


# --------------------------------------------------------------------------------------------
# A small warehouse in SQL: every schema, personal data where the real one has it
# --------------------------------------------------------------------------------------------


#: The pseudonym key of these tests (a real run reads CW_PII_KEY).
KEY = TEST_PII_KEY.encode()


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
            "md5(customer_id) as reminder_id from marts.customer_tiers"
        )
        con.execute(
            "create table seeds.value_tier_rules as "
            "select * from (values ('high_value', 1000), ('mid_value', 100)) t(value_tier, floor)"
        )
        # The SCD2 tier history is a view: published like a table.
        con.execute(
            "create view marts.customer_tiers_history as select customer_id, value_tier, "
            "date '2025-06-30' as valid_from, null::date as valid_to from marts.customer_tiers"
        )
        # The dbt snapshot of an installation from before the tier history: left in place by
        # the upgrade, never published again (no rule names its schema).
        con.execute(
            "create table snapshots.customer_tiers_snapshot as select customer_id, value_tier, "
            "md5(customer_id) as dbt_scd_id from marts.customer_tiers"
        )
    return path


@pytest.fixture
def warehouse(tmp_path) -> Path:
    return make_warehouse(tmp_path / "warehouse.duckdb")


# --------------------------------------------------------------------------------------------
# What is published
# --------------------------------------------------------------------------------------------


def test_the_rules_publish_marts_seeds_and_history_never_raw_staging_or_intermediate():
    rules = serving.load_rules()
    for table in ("marts.customer_tiers", "marts.loyalty_balances", "seeds.membership_levels",
                  "marts.customer_tiers_history", "marts.customer_tier_transitions"):  # fmt: skip
        assert rules.publishes(table), table
    # The tier history per as-of date grows every day: BI gets its versions and changes.
    for table in ("raw.orders", "staging.stg_shop__customers", "intermediate.int_as_of_date",
                  "main.anything", "manifest.tables", "marts.customer_tier_history",
                  "snapshots.customer_tiers_snapshot"):  # fmt: skip
        assert not rules.publishes(table), table
    # Customer ids and the hashes derived from them are published as keyed pseudonyms.
    assert rules.pseudonym_columns("marts.customer_tiers") == {"customer_id"}
    assert rules.pseudonym_columns("marts.crm_reminders") == {"customer_id", "reminder_id"}
    assert rules.pseudonym_columns("marts.customer_tiers_history") == {"customer_id"}
    assert rules.pseudonym_columns("seeds.membership_levels") == set()
    assert rules.excluded_columns("marts.customer_tiers") == {}
    assert all(rule.why for rule in rules.rules)


@pytest.mark.parametrize(
    "row, message",
    [
        ("staging,*,,yes,want it", "never published"),
        ("marts,crm_reminders,contact_address,yes,want it", "column rule"),
        ("marts,*,,maybe,unsure", "yes, no or pseudonym"),
        ("marts,*,full_name,pseudonym,hide it", "only an id column"),
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


def test_the_serving_guard_reads_the_one_personal_column_list():
    """The serving guard, the Dagster previews and the dbt test share seeds/personal_columns."""
    assert privacy.personal_columns() == serving.PERSONAL_COLUMNS
    assert "contact_address" in serving.PERSONAL_COLUMNS
    assert "ref('personal_columns')" in PERSONAL_TEST.read_text(encoding="utf-8")


def test_published_columns_is_the_column_hook():
    columns = ["customer_id", "reminder_id", "list_name"]
    published = serving.published_columns("marts.crm_reminders", columns)
    # Ids become their keyed pseudonyms (serving_tables.csv), looked up once per distinct id.
    assert list(published) == ["customer_key", "reminder_key", "list_name"]
    assert serving.PSEUDONYM_TABLE in published["customer_key"]
    assert '"marts"."crm_reminders"."customer_id"' in published["customer_key"]
    assert published["list_name"] == '"list_name"'
    assert list(serving.published_columns("marts.customer_tiers", ["a", 'b"c'])) == ["a", 'b"c']
    assert serving.published_columns("marts.customer_tiers", ['b"c'])['b"c'] == '"b""c"'


def test_a_personal_column_stops_the_publish(warehouse, tmp_path):
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create table marts.leaky as select 'c1' as customer_id, 'x@y.cn' as email")
    out = tmp_path / "serving"
    with pytest.raises(serving.ServingError, match=r"marts.leaky would publish personal data"):
        serving.publish(warehouse, out, key=KEY)
    assert serving.current_version(out) is None
    assert serving.list_versions(out) == []
    assert list((out / serving.VERSIONS_DIR).iterdir()) == []


# --------------------------------------------------------------------------------------------
# Publishing: layout, manifest, checksums
# --------------------------------------------------------------------------------------------


def test_publish_writes_a_complete_version_and_makes_it_current(warehouse, tmp_path):
    out = tmp_path / "serving"
    version = serving.publish(
        warehouse, out, as_of=date(2025, 6, 30), git_rev="abc123", keep=3, key=KEY
    )

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
        "marts.customer_tiers_history",
    }
    crm = manifest["tables"]["marts.crm_reminders"]
    assert crm["columns"] == ["customer_key", "list_name", "reminder_key"]
    assert crm["omitted_columns"] == []
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
    first = serving.publish(ascending, tmp_path / "serving", key=KEY)
    again = serving.publish(ascending, tmp_path / "serving", key=KEY)
    reordered = serving.publish(descending, tmp_path / "serving", key=KEY)
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
    changed = serving.publish(descending, tmp_path / "serving", key=KEY)
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


# --------------------------------------------------------------------------------------------
# A reader in its own process while the warehouse is rebuilt and republished
# --------------------------------------------------------------------------------------------

START = date(2025, 1, 1)
#: (customers, last order day) per build: each one has more customers and more history.
GROWTH = ((60, START + timedelta(days=100)), (120, START + timedelta(days=150)))


def write_growing_shop(folder: Path, customers: int, last_day: date) -> Path:
    """Customers G0000... with their orders up to ``last_day``; a larger shop extends a smaller
    one (each customer's rows come from its own seeded generator). Customers carry an e-mail,
    a phone and a name, and consent, so crm_reminders has contact addresses to hold back."""
    folder.mkdir(parents=True, exist_ok=True)
    orders, people = [], []
    for i in range(customers):
        rng = random.Random(1000 + i)
        signed_up = START + timedelta(days=rng.randint(0, 40))
        people.append((f"G{i:04d}", signed_up.isoformat(), f"g{i:04d}@shop.example",
                       f"1380000{i:04d}", f"Name {i:04d}", "yes"))  # fmt: skip
        for j in range(rng.randint(1, 6)):
            day = signed_up + timedelta(days=rng.randint(0, 150))
            if day <= last_day:
                orders.append((f"G{i:04d}-{j}", f"G{i:04d}", f"{day.isoformat()}T12:00:00+08:00",
                               f"{rng.uniform(20, 500):.2f}", "app", "completed"))  # fmt: skip
    for name, header, rows in (
        (
            "orders",
            ["order_id", "customer_id", "ordered_at", "amount", "channel", "status"],
            orders,
        ),
        (
            "customers",
            ["customer_id", "signed_up_at", "email", "phone", "full_name", "marketing_consent"],
            people,
        ),
    ):
        with (folder / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
    return folder


def contact_values(raw: Path) -> set[str]:
    with (raw / "customers.csv").open(encoding="utf-8") as handle:
        return {v for row in csv.DictReader(handle) for v in (row["email"], row["phone"])}


class Reader:
    """tests/serving_reader.py in its own process, stopped by a file; ``stop`` returns its
    summary (reads, versions seen with their customer counts, errors, inconsistent reads)."""

    def __init__(self, serving_dir: Path, work: Path, pause: float = 0.02) -> None:
        self.stop_file = work / "stop-reader"
        self.proc = subprocess.Popen(
            [sys.executable, str(READER), str(serving_dir), str(self.stop_file), str(pause)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> dict:
        self.stop_file.touch()
        out, err = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, err[-2000:]
        return json.loads(out.strip().splitlines()[-1])


def report(summary: dict, what: str) -> str:
    return (
        f"reader during {what}: {summary['reads']} reads of {len(summary['versions'])} "
        f"versions, {summary['errors']} errors, {summary['lock_errors']} lock errors, "
        f"{summary['inconsistent_reads']} inconsistent reads"
    )


@pytest.fixture(scope="module")
def growing_warehouses(tmp_path_factory) -> list[Warehouse]:
    """Two builds of a growing shop (raw load + dbt build of tier_summary and everything it
    needs, as in production but without the Python marts), once for the module."""
    work = tmp_path_factory.mktemp("serving_growth")
    return [
        build_warehouse(
            write_growing_shop(work / f"raw{stage}", customers, last_day),
            work / f"build{stage}",
            select="+tier_summary",
            exclude_unit_tests=True,
        )
        for stage, (customers, last_day) in enumerate(GROWTH)
    ]


@pytest.mark.slow
def test_a_reader_process_reads_consistently_while_builds_are_republished(
    growing_warehouses, tmp_path
):
    """A separate reader process queries current in a loop while the two builds are published
    in turns, twenty times, every publish switching and pruning (keep 2) under its reads:
    zero errors, zero lock errors, every read consistent with the manifest of its version."""
    out = tmp_path / "serving"
    reader = Reader(out, tmp_path)
    published = []
    try:
        for turn in range(20):
            build = growing_warehouses[turn % len(growing_warehouses)]
            published.append(serving.publish(build.path, out, keep=2, key=KEY))
            time.sleep(0.2)
    finally:
        summary = reader.stop()
    print("\n" + report(summary, "20 publishes"))
    assert summary["errors"] == 0, summary["first_errors"]
    assert summary["lock_errors"] == 0
    assert summary["inconsistent_reads"] == 0, summary["inconsistent"]
    assert summary["reads"] >= 40
    assert len(summary["versions"]) >= 10  # it read across many switches
    counts = [
        build.scalar("select count(*) from marts.customer_tiers") for build in growing_warehouses
    ]
    assert counts[0] < counts[1]
    assert set(summary["versions"].values()) == set(counts)
    assert [v.id for v in published][-2:] == serving.list_versions(out)
    # Each version holds exactly what its build holds.
    for version, build in zip(published[-2:], growing_warehouses, strict=True):
        assert content_mismatches(build.path, version.manifest, KEY) == []


@pytest.mark.slow
def test_a_published_build_holds_no_personal_data(growing_warehouses, tmp_path):
    build = growing_warehouses[-1]
    version = serving.publish(build.path, tmp_path / "serving", key=KEY)
    assert_nothing_personal(version.path)
    assert personal_values_found(version.path, contact_values(build.raw_dir)) == []
    assert personal_values_found(version.path, ["g0001@shop.example"]) == []
    with build.connect() as con:  # the values are in the warehouse: the scan would find them
        assert (
            con.execute(
                "select count(*) from staging.stg_shop__customers "
                "where email = 'g0001@shop.example'"
            ).fetchone()[0]
            == 1
        )


# --------------------------------------------------------------------------------------------
# The long variant with the real job (make test-heavy)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def job_defs(tmp_path_factory) -> Iterator[dg.Definitions]:
    with isolated_dbt_paths(tmp_path_factory.mktemp("serving_dbt")):
        yield build_definitions()


def _corrupt_surveys(warehouse: Path, corrupt: bool) -> None:
    """A duplicated survey response (as from a bad manual fix) fails the blocking dbt test
    unique(response_id); ``corrupt=False`` removes it again."""
    with duckdb.connect(str(warehouse)) as con:
        if corrupt:
            con.execute(
                "insert into raw.survey_responses (response_id, customer_id, submitted_at, nps, "
                "satisfaction, source_file, source_row) values "
                "('dup-1', 'G0001', timestamp '2025-03-01 10:00:00', 9, 5, 'manual.csv', 1), "
                "('dup-1', 'G0002', timestamp '2025-03-02 10:00:00', 3, 2, 'manual.csv', 2)"
            )
        else:
            con.execute("delete from raw.survey_responses where source_file = 'manual.csv'")


@pytest.mark.heavy
def test_a_reader_process_across_real_rebuilds_and_a_failed_one(job_defs, tmp_path):
    """The job four times on a shop growing from 200 to 800 customers (from 200 on the models
    are fitted, not the fallback), a build failing a blocking check after the second, and the
    reader process reading throughout. Each good build publishes exactly what it built and is
    read; the failed one publishes nothing and the reader stays on the last good version."""
    warehouse = tmp_path / "warehouse.duckdb"
    out = tmp_path / "serving"
    reader = Reader(out, tmp_path)
    published = []
    try:
        for stage, customers in enumerate((200, 400, 600, 800)):
            raw = write_growing_shop(
                tmp_path / f"raw{stage}", customers, START + timedelta(days=120 + 10 * stage)
            )
            result = run_job(job_defs, raw, warehouse)
            assert result.success, step_failures(result)
            version_id = materialized(result)[SERVING_KEY]["version_id"].value
            assert serving.current_version(out) == version_id
            assert content_mismatches(warehouse, serving.read_manifest(out), KEY) == []
            published.append(version_id)
            time.sleep(1)
            if stage == 1:
                _corrupt_surveys(warehouse, corrupt=True)
                failed = run_job(job_defs, raw, warehouse)
                assert not failed.success
                assert SERVING_KEY not in materialized(failed)
                assert serving.current_version(out) == version_id
                _corrupt_surveys(warehouse, corrupt=False)
    finally:
        summary = reader.stop()
    print("\n" + report(summary, "4 good and 1 failed real builds"))
    assert summary["errors"] == 0, summary["first_errors"]
    assert summary["inconsistent_reads"] == 0, summary["inconsistent"]
    assert list(summary["versions"]) == published  # in order, nothing else
    counts = list(summary["versions"].values())
    assert counts == sorted(counts) and len(set(counts)) == 4
    assert_nothing_personal(out / "current")
    assert personal_values_found(out / "current", contact_values(raw)) == []
