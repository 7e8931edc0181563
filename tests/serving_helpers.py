"""Shared by the serving-copy tests (tests/test_serving*.py): a small warehouse written in SQL,
with every schema and personal data where the real one has it, and the ``warehouse`` fixture
holding one (a pytest plugin, see tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from .conftest import PROJECT_DIR
from .dagster_job import TEST_PII_KEY

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
