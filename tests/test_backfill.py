"""The tier history is the same whatever order its as-of dates are computed in.

The history (marts.customer_tier_history) is a date-partitioned Dagster asset; a backfill of a
range of its partitions is one run (customer_warehouse/tier_history.py,
orchestration/defs/dbt/history.py). Proven on a small demo shop through the real Dagster
definitions, in ephemeral instances:

- a backfill of d1..d3 on an empty warehouse (raw files loaded in the same run, as
  `make backfill` selects) is one run, records the range's partitions and builds nothing but
  the history and what derives from it;
- partition runs in a shuffled order with a rerun ([d3, d1, d2, d1]) give the same history,
  SCD2 view and transitions as that backfill in order (EXCEPT ALL both ways);
- a rerun of a past day changes nothing; `make backfill` refuses malformed settings;
- heavy: `make backfill` itself (one run in a temporary DAGSTER_HOME, the same tables); a
  date's history rows equal customer_tiers built as of that date; a backfill of a past year
  after a week of daily runs, the last one the real daily job, equals every date in order.
"""

from __future__ import annotations

import os
import subprocess
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from customer_warehouse import demo, ingestion
from customer_warehouse import tier_history as th
from customer_warehouse.ingestion import surveys

from .conftest import PROJECT_DIR
from .dagster_job import TEST_PII_KEY, isolated_dbt_paths, run_job, step_failures

HISTORY = dg.AssetKey(["marts", "customer_tier_history"])
DERIVED = [
    dg.AssetKey(["marts", "customer_tiers_history"]),
    dg.AssetKey(["marts", "customer_tier_transitions"]),
]
#: What is compared between two builds: the history and everything derived from it.
TABLES = ("marts.customer_tier_history", "marts.customer_tiers_history",
          "marts.customer_tier_transitions")  # fmt: skip
#: Three consecutive month ends, so a month-end backfill of d1..d3 computes exactly these.
D1, D2, D3 = date(2025, 7, 31), date(2025, 8, 31), date(2025, 9, 30)
DEMO_CUSTOMERS = 200

# ----------------------------------------------------------------------------- the dates


def test_auto_gives_every_day_of_a_short_range_and_month_ends_of_a_long_one() -> None:
    assert th.as_of_dates(date(2024, 2, 27), date(2024, 3, 1)) == [
        date(2024, 2, 27),
        date(2024, 2, 28),
        date(2024, 2, 29),
        date(2024, 3, 1),
    ]
    short = th.as_of_dates(date(2024, 1, 1), date(2024, 1, 1) + timedelta(th.DAILY_MAX_DAYS - 1))
    assert len(short) == th.DAILY_MAX_DAYS
    # one day longer: month ends, and the range's last day
    long = th.as_of_dates(date(2024, 1, 1), date(2024, 1, 1) + timedelta(th.DAILY_MAX_DAYS))
    assert long == [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 2)]


def test_month_ends_and_days_on_request() -> None:
    assert th.as_of_dates(date(2024, 1, 15), date(2024, 4, 10), "month") == [
        date(2024, 1, 31),
        date(2024, 2, 29),
        date(2024, 3, 31),
        date(2024, 4, 10),
    ]
    assert th.as_of_dates(date(2024, 1, 31), date(2024, 2, 29), "month") == [
        date(2024, 1, 31),
        date(2024, 2, 29),
    ]
    assert th.as_of_dates(date(2024, 1, 5), date(2024, 1, 5), "month") == [date(2024, 1, 5)]
    assert len(th.as_of_dates(date(2023, 1, 1), date(2024, 12, 31), "day")) == 731


def test_bad_ranges_say_what_to_do() -> None:
    with pytest.raises(th.ReplayError, match="after its end"):
        th.as_of_dates(date(2024, 2, 1), date(2024, 1, 1))
    with pytest.raises(th.ReplayError, match="is not one of auto, day, month"):
        th.as_of_dates(date(2024, 1, 1), date(2024, 2, 1), "year")


def test_make_backfill_refuses_bad_dates_and_options_before_running_anything(tmp_path) -> None:
    marker = tmp_path / "marker"
    env = _make_env(tmp_path / "w.duckdb", tmp_path / "raw", tmp_path / "home")
    (tmp_path / "raw").mkdir()
    cases = [
        ({}, "BACKFILL_START=YYYY-MM-DD"),
        ({"BACKFILL_START": "2025-01-01"}, "BACKFILL_END=YYYY-MM-DD"),
        ({"BACKFILL_START": f"$(touch {marker})", "BACKFILL_END": "2025-02-01"}, "BACKFILL_START"),
        ({"BACKFILL_START": "2025-01-01", "BACKFILL_END": "2025-02-01",
          "BACKFILL_EVERY": f"week; touch {marker}"}, "BACKFILL_EVERY must be"),
    ]  # fmt: skip
    for values, message in cases:
        proc = _make_backfill(env | values)
        assert proc.returncode == 2, (values, proc.stdout, proc.stderr)
        assert message in proc.stdout, (values, proc.stdout)
    assert not marker.exists()
    assert not (tmp_path / "w.duckdb").exists()


# ----------------------------------------------------------------------------- builds


@pytest.fixture(scope="module")
def dbt_paths(tmp_path_factory):
    with isolated_dbt_paths(tmp_path_factory.mktemp("history_dbt")) as folder:
        yield folder


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("history_raw") / "raw"
    demo.generate(raw, customers=DEMO_CUSTOMERS, seed=11, dirty_rate=0.0, quiet=True)
    return raw


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    """The one warehouse path of the module's builds, one after the other: dbt re-parses the
    whole project when the warehouse path changes (it is part of the profile), so one path
    lets every build after the first reuse dbt's partial parse."""
    return tmp_path_factory.mktemp("history") / "warehouse.duckdb"


@pytest.fixture(scope="module")
def defs(dbt_paths, raw_dir, warehouse) -> dg.Definitions:
    from orchestration.defs import build_definitions

    with pytest.MonkeyPatch.context() as mp:  # parsed with the profile the runs will use
        mp.setenv("CW_WAREHOUSE_PATH", str(warehouse))
        mp.setenv("CW_RAW_DIR", str(raw_dir))
        mp.setenv("CW_AS_OF_DATE", "")
        return build_definitions()


def _loaded_warehouse(path: Path, raw: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:
        ingestion.load_raw(con, raw, log=lambda _line: None)
        surveys.ingest_surveys(con, raw / "surveys")
    return path


def materialize(
    defs: dg.Definitions,
    raw: Path,
    warehouse: Path,
    *,
    start: date,
    end: date | None = None,
    every: str = "auto",
    derived: bool = False,
    with_raw: bool = False,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    """One run of the history's partition `start` (or range `start`..`end`), as the UI starts
    it; with `derived`, the SCD2 view and the transitions in the same run, with `with_raw`
    the raw files loaded first in that run (as `make backfill` does)."""
    raw_keys = [
        node.key for node in defs.resolve_asset_graph().asset_nodes if node.group_name == "raw"
    ]
    keys = [*(raw_keys if with_raw else []), HISTORY, *(DERIVED if derived else [])]
    if end is None:
        tags = {"dagster/partition": start.isoformat()}
    else:
        tags = {"dagster/asset_partition_range_start": start.isoformat(),
                "dagster/asset_partition_range_end": end.isoformat()}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CW_RAW_DIR", str(raw))
        mp.setenv("CW_WAREHOUSE_PATH", str(warehouse))
        mp.setenv("CW_AS_OF_DATE", "")
        job = defs.resolve_implicit_job_def_def_for_assets(keys)
        with dg.DagsterInstance.ephemeral() if instance is None else _keep(instance) as inst:
            result = job.execute_in_process(
                instance=inst,
                raise_on_error=False,
                asset_selection=keys,
                tags=tags,
                run_config={"ops": {"tier_history": {"config": {"every": every}}}},
            )
    assert result.success, step_failures(result)
    return result


class _keep:
    """A context manager that hands out an instance without closing it."""

    def __init__(self, instance: dg.DagsterInstance):
        self.instance = instance

    def __enter__(self) -> dg.DagsterInstance:
        return self.instance

    def __exit__(self, *exc) -> None:
        return None


def read_tables(warehouse: Path) -> dict[str, pd.DataFrame]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {table: con.execute(f"select * from {table}").df() for table in TABLES}


def assert_same_rows(left: dict[str, pd.DataFrame], right: dict[str, pd.DataFrame]) -> None:
    """Every table holds the same multiset of rows in both builds (EXCEPT ALL both ways)."""
    con = duckdb.connect()
    for table in TABLES:
        con.register("a", left[table])
        con.register("b", right[table])
        only_left = con.execute("select * from a except all select * from b").df()
        only_right = con.execute("select * from b except all select * from a").df()
        assert only_left.empty and only_right.empty, (
            f"{table}: {len(only_left)} rows only in the first build, {len(only_right)} only in "
            f"the second\n{only_left.head()}\n{only_right.head()}"
        )
        assert len(left[table]) == len(right[table]) > 0, table
        con.unregister("a")
        con.unregister("b")
    con.close()


def history_fingerprint(warehouse: Path) -> tuple:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(
            "select count(*), sum(hash(t)) from marts.customer_tier_history as t"
        ).fetchone()


def history_dates(warehouse: Path) -> list[date]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "select distinct as_of_date from marts.customer_tier_history order by 1"
        ).fetchall()
    return [row[0] for row in rows]


def _make_env(warehouse: Path, raw: Path, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CW_", "BACKFILL_"))}
    return env | {
        "CW_RAW_DIR": str(raw),
        "CW_WAREHOUSE_PATH": str(warehouse),
        "CW_PII_KEY": TEST_PII_KEY,
        "DAGSTER_HOME": str(home),
        **extra,
    }


def _make_backfill(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "-s", "backfill"],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip


@pytest.fixture(scope="module")
def in_order(defs, raw_dir, warehouse) -> dict:
    """A backfill of d1..d3 (month ends) on an empty warehouse, the raw files loaded in the
    same run (what `make backfill` selects), in an ephemeral instance: its runs, the partitions
    it recorded and the tables it built (read into memory: the path is reused)."""
    with dg.DagsterInstance.ephemeral() as instance:
        materialize(
            defs, raw_dir, warehouse, start=D1, end=D3, every="month", derived=True,
            with_raw=True, instance=instance,
        )  # fmt: skip
        runs = instance.get_runs()
        partitions = instance.get_materialized_partitions(HISTORY)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        scratch = th.scratch_schemas(con)
        marts = {row[0] for row in con.execute(
            "select table_name from information_schema.tables where table_schema = 'marts'"
        ).fetchall()}  # fmt: skip
    return {
        "runs": runs,
        "partitions": partitions,
        "tables": read_tables(warehouse),
        "dates": history_dates(warehouse),
        "scratch_schemas": scratch,
        "marts": marts,
    }


@pytest.fixture(scope="module")
def shuffled(defs, raw_dir, warehouse, in_order) -> dict:
    """After the backfill in order (`in_order`, read into memory), the same warehouse path
    from scratch: partition runs d3, d1, d2, then d1 again; the history before that rerun."""
    for path in (warehouse, warehouse.with_suffix(".duckdb.wal")):
        path.unlink(missing_ok=True)
    _loaded_warehouse(warehouse, raw_dir)
    for day in (D3, D1, D2):
        materialize(defs, raw_dir, warehouse, start=day)
    before_rerun = history_fingerprint(warehouse)
    materialize(defs, raw_dir, warehouse, start=D1, derived=True)
    return {"warehouse": warehouse, "before_rerun": before_rerun}


@pytest.mark.slow
def test_a_backfill_is_one_dagster_run_on_an_empty_warehouse(in_order, defs) -> None:
    [run] = in_order["runs"]
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/asset_partition_range_start"] == D1.isoformat()
    assert run.tags["dagster/asset_partition_range_end"] == D3.isoformat()
    # the raw files were loaded in that same run (the warehouse was empty)
    assert dg.AssetKey(["raw", "orders"]) in run.asset_selection
    # what makes the UI's backfill of a range one run, too
    assert defs.resolve_assets_def(HISTORY).backfill_policy == dg.BackfillPolicy.single_run()
    # Dagster records every day of the range; month ends were computed (BACKFILL_EVERY=month)
    days = (D3 - D1).days + 1
    assert in_order["partitions"] == {(D1 + timedelta(k)).isoformat() for k in range(days)}
    assert in_order["dates"] == [D1, D2, D3]
    assert in_order["scratch_schemas"] == []
    # the marts were never built for a past date: only the history and what derives from it
    assert in_order["marts"] == {
        "customer_tier_history",
        "customer_tiers_history",
        "customer_tier_transitions",
    }


@pytest.mark.slow
def test_shuffled_runs_with_a_rerun_equal_the_backfill_in_order(shuffled, in_order) -> None:
    assert history_dates(shuffled["warehouse"]) == [D1, D2, D3]
    assert_same_rows(read_tables(shuffled["warehouse"]), in_order["tables"])
    # the history moves: there is something to get wrong
    transitions = in_order["tables"]["marts.customer_tier_transitions"]
    assert set(transitions["changed_on"].dt.date) == {D2, D3}
    assert set(transitions["dimension"]) >= {"lifecycle_stage", "value_tier"}


@pytest.mark.slow
def test_a_rerun_of_a_past_day_changes_nothing(shuffled) -> None:
    assert history_fingerprint(shuffled["warehouse"]) == shuffled["before_rerun"]


@pytest.mark.heavy
@pytest.mark.slow
def test_each_date_holds_the_tiers_of_that_date(shuffled, raw_dir, tmp_path) -> None:
    """The history row of d2 is what customer_tiers says when the warehouse is built as of d2."""
    from .conftest import build_warehouse

    built = build_warehouse(raw_dir, tmp_path, select="+customer_tiers", as_of_date=D2.isoformat())
    columns = ["customer_id", "value_tier", "lifecycle_stage", "membership_level", "spend_12m"]
    with built.connect() as con:
        expected = con.execute(f"select {', '.join(columns)} from marts.customer_tiers").df()
    with duckdb.connect(str(shuffled["warehouse"]), read_only=True) as con:
        recorded = con.execute(
            f"select {', '.join(columns)} from marts.customer_tier_history where as_of_date = ?",
            [D2],
        ).df()
    pd.testing.assert_frame_equal(
        recorded.sort_values("customer_id").reset_index(drop=True),
        expected.sort_values("customer_id").reset_index(drop=True),
    )


# ----------------------------------------------------------------------------- heavy


@pytest.mark.heavy
@pytest.mark.slow
def test_make_backfill_is_one_run_and_builds_what_the_ui_backfill_builds(
    defs, raw_dir, in_order, tmp_path
) -> None:
    """`make backfill` (the CLI: `dagster asset materialize --partition-range`) on an empty
    warehouse in a temporary DAGSTER_HOME: one run, the range's partitions, the same tables."""
    warehouse, home = tmp_path / "cli.duckdb", tmp_path / "dagster_home"
    env = _make_env(
        warehouse,
        raw_dir,
        home,
        BACKFILL_START=D1.isoformat(),
        BACKFILL_END=D3.isoformat(),
        BACKFILL_EVERY="month",
        DBT_TARGET_PATH=os.environ["DBT_TARGET_PATH"],
        DBT_LOG_PATH=os.environ["DBT_LOG_PATH"],
    )
    proc = _make_backfill(env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get() as instance:
            runs = instance.get_runs()
            partitions = instance.get_materialized_partitions(HISTORY)
    assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS]
    assert partitions == in_order["partitions"]
    assert_same_rows(read_tables(warehouse), in_order["tables"])


@pytest.mark.heavy
@pytest.mark.slow
def test_a_past_year_backfilled_after_daily_runs_equals_the_dates_in_order(
    defs, raw_dir, tmp_path
) -> None:
    """A week of daily runs (partition runs, then the real daily job for the last order date),
    then a backfill of the year before it (month ends, one run) = every date in order."""
    daily = tmp_path / "daily" / "daily.duckdb"
    daily.parent.mkdir()
    as_of = date(2025, 12, 31)  # the last order date of the demo data: the daily job's as-of
    week = [as_of - timedelta(days=k) for k in range(6, 0, -1)]
    _loaded_warehouse(daily, raw_dir)
    for day in week:
        materialize(defs, raw_dir, daily, start=day)
    result = run_job(defs, raw_dir, daily)  # job full_refresh, as `make run` runs it
    assert result.success, step_failures(result)
    recorded = {
        event.partition
        for event in result.get_asset_materialization_events()
        if event.asset_key == HISTORY
    }
    assert recorded == {None, as_of.isoformat()}
    with dg.DagsterInstance.ephemeral() as instance:
        materialize(
            defs, raw_dir, daily, start=date(2024, 12, 1), end=date(2025, 11, 30),
            every="month", derived=True, instance=instance,
        )  # fmt: skip
        assert len(instance.get_runs()) == 1
    year = th.as_of_dates(date(2024, 12, 1), date(2025, 11, 30), "month")
    assert history_dates(daily) == [*year, *week, as_of]

    in_order = _loaded_warehouse(tmp_path / "in_order" / "in_order.duckdb", raw_dir)
    for day in [*year, *week, as_of]:
        materialize(defs, raw_dir, in_order, start=day, derived=day == as_of)
    assert_same_rows(read_tables(daily), read_tables(in_order))
