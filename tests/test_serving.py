"""The serving copy: the publish module, the SQLAlchemy path, the Dagster asset and a separate
reader process that reads while the warehouse is rebuilt and republished.

Module tests (fast) run on small warehouses written in SQL (tests/serving_helpers.py): what is
published and what never is, the layout, the manifest and its checksums (here); the atomic
switch, pruning, a killed publish's leftovers, a reader that keeps its old version open, the
settings, SQLAlchemy and the asset (tests/test_serving_switch.py). The reader loop (slow, in
``make test``, tests/test_serving_readers.py) builds a small shop twice, growing, and publishes
the two builds in turns while ``tests/serving_reader.py`` reads ``current`` in its own process;
its long variant (heavy, ``make test-heavy``) runs the real Dagster job four times on a growing
shop and once with a failing blocking check. The full build of
tests/test_orchestration_full_build.py publishes too: there the published content is compared
with the warehouse, scanned for personal data, and a failing blocking check is shown to leave
``current`` untouched."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta

import duckdb
import pytest

from customer_warehouse import privacy, serving

from .serving_checks import assert_nothing_personal
from .serving_helpers import KEY, PERSONAL_TEST, make_warehouse

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
