"""The backfill replays past as-of dates into the tier history, in order, and the history it
builds is exactly what the tiers were on each of those dates."""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd
import pytest

from customer_warehouse import backfill as bf
from customer_warehouse import demo_data, raw_load, surveys

from .conftest import PROJECT_DIR, Warehouse, dbt_env, run_dbt

# ----------------------------------------------------------------------------- date ranges


def test_month_ends_between_start_and_end_and_the_end_itself() -> None:
    assert bf.as_of_dates(date(2024, 1, 15), date(2024, 4, 10), "month") == [
        date(2024, 1, 31),
        date(2024, 2, 29),
        date(2024, 3, 31),
        date(2024, 4, 10),
    ]
    assert bf.as_of_dates(date(2024, 1, 31), date(2024, 2, 29), "month") == [
        date(2024, 1, 31),
        date(2024, 2, 29),
    ]


def test_weeks_and_days() -> None:
    assert bf.as_of_dates(date(2024, 1, 1), date(2024, 1, 20), "week") == [
        date(2024, 1, 1),
        date(2024, 1, 8),
        date(2024, 1, 15),
        date(2024, 1, 20),
    ]
    assert bf.as_of_dates(date(2024, 1, 1), date(2024, 1, 3), "day") == [
        date(2024, 1, 1),
        date(2024, 1, 2),
        date(2024, 1, 3),
    ]
    assert bf.as_of_dates(date(2024, 1, 5), date(2024, 1, 5), "month") == [date(2024, 1, 5)]


def test_bad_ranges_say_what_to_do() -> None:
    with pytest.raises(bf.BackfillError, match="after --end"):
        bf.as_of_dates(date(2024, 2, 1), date(2024, 1, 1), "month")
    with pytest.raises(bf.BackfillError, match="not one of"):
        bf.as_of_dates(date(2024, 1, 1), date(2024, 2, 1), "year")


def test_cli_rejects_a_malformed_date(capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CW_WAREHOUSE_PATH", str(tmp_path / "missing.duckdb"))
    assert bf.main(["--start", "2024-13-01", "--end", "2024-12-31"]) == 2
    assert "load the warehouse first" in capsys.readouterr().err.lower()


# ----------------------------------------------------------------------------- replay


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> Warehouse:
    """A small warehouse after a normal build (so it has one snapshot, of the last date)."""
    work = tmp_path_factory.mktemp("backfill")
    raw = work / "raw"
    demo_data.generate(raw, customers=250, seed=11, dirty_rate=0.0, quiet=True)
    path = work / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        raw_load.load_raw(con, raw, log=lambda _line: None)
        surveys.ingest_surveys(con, raw / "surveys")
    # only what the snapshot needs, and only the tests of what is built
    run_dbt(
        ["build", "--select", "+customer_tiers_snapshot", "--indirect-selection", "cautious"],
        dbt_env(path, work, raw),
    )
    return Warehouse(path=path, raw_dir=raw, work_dir=work)


@pytest.fixture
def dbt_env_vars(loaded: Warehouse, monkeypatch) -> bf.DbtProject:
    """The in-process dbt of the backfill pointed at the test warehouse and scratch folders."""
    for name in ("CW_AS_OF_DATE", "CW_DBT_TARGET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CW_WAREHOUSE_PATH", str(loaded.path))
    monkeypatch.setenv("CW_RAW_DIR", str(loaded.raw_dir))
    monkeypatch.setenv("DBT_TARGET_PATH", str(loaded.work_dir / "target_backfill"))
    monkeypatch.setenv("DBT_LOG_PATH", str(loaded.work_dir / "logs_backfill"))
    monkeypatch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    return bf.DbtProject(PROJECT_DIR)


def _state_on(con: duckdb.DuckDBPyConnection, as_of: date) -> pd.DataFrame:
    """Each customer's tier, stage and level on `as_of` according to the SCD2 history."""
    return (
        con.execute(
            """
            select customer_id, value_tier, lifecycle_stage, membership_level
            from snapshots.customer_tiers_snapshot
            where cast(dbt_valid_from as date) <= ?
                and (dbt_valid_to is null or cast(dbt_valid_to as date) > ?)
            """,
            [as_of, as_of],
        )
        .df()
        .set_index("customer_id")
        .sort_index()
    )


def _current_tiers(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return (
        con.execute(
            "select customer_id, value_tier, lifecycle_stage, membership_level "
            "from marts.customer_tiers"
        )
        .df()
        .set_index("customer_id")
        .sort_index()
    )


@pytest.mark.slow
def test_backfill_replays_history_that_matches_each_dates_tiers(
    loaded: Warehouse, dbt_env_vars: bf.DbtProject
) -> None:
    dates = [date(2025, 3, 31), date(2025, 6, 30), date(2025, 9, 30)]
    end_before = bf.history_end(loaded.path)
    assert end_before is not None and end_before > dates[-1]

    # History grows in as-of order: earlier dates are refused without --reset ...
    with pytest.raises(bf.BackfillError, match="--reset"):
        bf.backfill(dates, warehouse_path=loaded.path, dbt=dbt_env_vars, log=lambda _: None)

    # ... and replayed after it, with progress lines.
    lines: list[str] = []
    report = bf.backfill(
        dates[:2],
        warehouse_path=loaded.path,
        reset=True,
        restore=False,
        dbt=dbt_env_vars,
        log=lines.append,
    )
    assert [r.as_of_date for r in report.dates] == dates[:2]
    assert any("[1/2] as of 2025-03-31" in line for line in lines)
    assert any(line.startswith("reset:") for line in lines)

    # Resume: a later date appends to the existing history without a reset.
    bf.backfill(
        dates[2:], warehouse_path=loaded.path, restore=False, dbt=dbt_env_vars, log=lambda _: None
    )
    assert bf.history_end(loaded.path) == dates[-1]

    with duckdb.connect(str(loaded.path)) as con:
        snapshot_dates = [
            r[0]
            for r in con.execute(
                "select distinct as_of_date from snapshots.customer_tiers_snapshot order by 1"
            ).fetchall()
        ]
        assert snapshot_dates == dates
        # marts are as of the last replayed date (restore=False): the history agrees with them
        state_last = _state_on(con, dates[-1])
        pd.testing.assert_frame_equal(state_last, _current_tiers(con))

    # The middle date: recompute the tiers for it directly and compare with the history.
    dbt_env_vars.invoke(["run", "--select", bf.TIERS_SELECTION], as_of=dates[1])
    with duckdb.connect(str(loaded.path)) as con:
        pd.testing.assert_frame_equal(_state_on(con, dates[1]), _current_tiers(con))

    # The restore step rebuilds the current marts and the transitions of the replayed period.
    dbt_env_vars.invoke(["run", "--select", bf.RESTORE_SELECTION])
    with duckdb.connect(str(loaded.path)) as con:  # same config as dbt-duckdb in this process
        changed_on = {
            r[0]
            for r in con.execute(
                "select distinct changed_on from marts.customer_tier_transitions"
            ).fetchall()
        }
        assert changed_on == set(dates[1:])
        as_of_now = con.execute("select as_of_date from intermediate.int_as_of_date").fetchone()[0]
        assert as_of_now == end_before
        # every transition is a real change between two consecutive replayed dates
        bad = con.execute(
            """
            select count(*) from marts.customer_tier_transitions as t
            where t.from_value = t.to_value or t.previous_as_of_date >= t.changed_on
            """
        ).fetchone()[0]
        assert bad == 0
