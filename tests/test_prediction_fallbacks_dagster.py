"""Odd shops through Dagster: the two prediction assets run against a temporary DuckDB file that
holds just the tables they read; a short history or only refunds give a successful run with a
WARN check instead of a failed one (tests/test_prediction_fallbacks.py says why these tests)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from customer_warehouse import predictions as P

from .prediction_fallback_helpers import AS_OF, purchase_days

# --------------------------------------------------------------------------------------------
# Through Dagster: a temporary warehouse with just the tables the assets read
# --------------------------------------------------------------------------------------------


def build_warehouse(path: Path, tx: pd.DataFrame, as_of: date, prospects: int = 2) -> None:
    """marts.customer_features, intermediate.int_as_of_date, seeds.churn_risk_bands and
    intermediate.int_orders_aggregated_to_customer_days from purchase days, with plain SQL."""
    con = duckdb.connect(str(path))
    for schema in ("marts", "intermediate", "seeds"):
        con.execute(f"create schema {schema}")
    con.execute("create table intermediate.int_as_of_date as select ?::date as as_of_date", [as_of])
    con.execute(
        "create table seeds.churn_risk_bands as select band, min_p_alive from read_csv(?)",
        [str(P.CHURN_BANDS_SEED)],
    )
    con.register("tx", tx)
    con.execute("""
        create table intermediate.int_orders_aggregated_to_customer_days as
        select cast(customer_id as varchar) as customer_id,
               cast(purchase_date as date) as purchase_date,
               cast(sum(value) as decimal(18, 2)) as revenue
        from tx group by all
    """)
    con.execute(
        """
        create table marts.customer_features as
        with d as (
            select customer_id, purchase_date, revenue,
                   row_number() over (partition by customer_id order by purchase_date) as k
            from intermediate.int_orders_aggregated_to_customer_days
        ),
        c as (
            select customer_id, min(purchase_date) as first_purchase_date,
                   max(purchase_date) as last_purchase_date, count(*) - 1 as frequency,
                   sum(revenue) filter (where k > 1) as repeat_revenue
            from d group by customer_id
        )
        select customer_id, first_purchase_date, frequency,
               date_diff('day', first_purchase_date, last_purchase_date) as recency_days,
               date_diff('day', first_purchase_date, ?::date) as tenure_days,
               case when frequency > 0 then repeat_revenue / frequency end
                   as avg_repeat_purchase_day_value
        from c
        union all
        select 'prospect-' || i, null, 0, 0, 0, null from range(?) t(i)
        """,
        [as_of, prospects],
    )
    con.close()


@pytest.fixture
def dagster_env(tmp_path, monkeypatch) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    warehouse = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("CW_RAW_DIR", str(raw))
    monkeypatch.setenv("CW_WAREHOUSE_PATH", str(warehouse))
    monkeypatch.delenv("CW_AS_OF_DATE", raising=False)
    return warehouse


def materialize(run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    from orchestration.defs.predictions.assets import customer_predictions, prediction_backtest
    from orchestration.defs.resources import WarehouseResource

    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize(
            [customer_predictions, prediction_backtest],
            resources={"warehouse": WarehouseResource()},
            instance=instance,
            raise_on_error=False,
            run_config=run_config,
        )


def checks_by_name(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    return {
        e.event_specific_data.check_name: e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def metadata_of(result: dg.ExecuteInProcessResult, table: str) -> dict:
    key = dg.AssetKey(table.split("."))
    return next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == key
    )


BLOCKING = ("model_fit_is_sane", "one_prediction_per_customer", "predictions_are_finite")


def test_dagster_short_history_succeeds_with_warnings(dagster_env):
    """A handful of customers over two months: the run succeeds, the WARN checks fail with the
    reasons, the blocking checks pass, and the tables say what happened."""
    as_of = date(2025, 3, 1)
    build_warehouse(dagster_env, purchase_days(5, date(2025, 1, 1), as_of, seed=1), as_of)
    result = materialize()
    assert result.success
    checks = checks_by_name(result)
    assert set(checks) == {*BLOCKING, "predictions_use_fitted_models", "backtest_ran"}
    for name in BLOCKING:
        assert checks[name].passed, (name, checks[name].description)
    warn = checks["predictions_use_fitted_models"]
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    assert "5 customers with a purchase" in warn.description
    assert "min_history_days" in warn.description
    skipped = checks["backtest_ran"]
    assert not skipped.passed and skipped.severity == dg.AssetCheckSeverity.WARN
    assert "Backtest skipped" in skipped.description and "59 days" in skipped.description

    meta = metadata_of(result, "marts.clv_model_params")
    assert meta["bg_nbd_fit_status"].value == "not_attempted"
    assert "min_customers" in meta["status_reasons"].value
    assert metadata_of(result, "marts.customer_predictions")["prediction_method"].value == (
        "naive_rate"
    )
    bt_meta = metadata_of(result, "marts.prediction_backtest")
    assert bt_meta["backtest_status"].value == "skipped"
    assert "59 days" in bt_meta["status_reason"].value

    with duckdb.connect(str(dagster_env), read_only=True) as con:
        params = con.execute(
            "select model, parameter, value, fit_status, status_reason "
            "from marts.clv_model_params order by model"
        ).fetchall()
        assert [(m, p, v, s) for m, p, v, s, _ in params] == [
            ("bg_nbd", None, None, "not_attempted"),
            ("gamma_gamma", None, None, "not_attempted"),
        ]
        assert all(reason for *_, reason in params)
        preds = con.execute(
            "select count(*), count(distinct prediction_method), min(prediction_method) "
            "from marts.customer_predictions"
        ).fetchall()[0]
        assert preds == (5, 1, "naive_rate")  # prospects get no row
        bt = con.execute(
            "select backtest_status, status_reason, holdout_end from marts.prediction_backtest"
        ).fetchall()
        assert len(bt) == 1 and bt[0][0] == "skipped" and "59 days" in bt[0][1]
        assert bt[0][2] == as_of


def test_dagster_only_refunds_writes_empty_predictions(dagster_env):
    """No customer with a purchase: an empty predictions table with every column, the status
    rows, a skipped backtest, and a successful run."""
    empty = pd.DataFrame(
        {
            "customer_id": pd.Series([], dtype=str),
            "purchase_date": pd.Series([], dtype="datetime64[ns]"),
            "value": pd.Series([], dtype=float),
        }
    )
    build_warehouse(dagster_env, empty, AS_OF, prospects=4)
    result = materialize()
    assert result.success
    checks = checks_by_name(result)
    for name in BLOCKING:
        assert checks[name].passed, (name, checks[name].description)
    assert not checks["predictions_use_fitted_models"].passed
    assert "no customer has a purchase" in checks["predictions_use_fitted_models"].description
    assert not checks["backtest_ran"].passed
    with duckdb.connect(str(dagster_env), read_only=True) as con:
        columns = con.execute("describe marts.customer_predictions").fetchall()
        assert [c[0] for c in columns] == list(P.PREDICTION_COLUMNS)
        types = {c[0]: c[1] for c in columns}
        assert types["customer_id"] == "VARCHAR" and types["p_alive"] == "DOUBLE"
        assert types["as_of_date"] == "DATE"
        assert con.execute("select count(*) from marts.customer_predictions").fetchone() == (0,)
        statuses = con.execute(
            "select model, fit_status from marts.clv_model_params order by model"
        ).fetchall()
        assert statuses == [("bg_nbd", "not_attempted"), ("gamma_gamma", "not_attempted")]


def test_dagster_one_year_runs_the_backtest_on_derived_windows(dagster_env):
    as_of = date(2024, 12, 31)
    build_warehouse(dagster_env, purchase_days(30, date(2024, 1, 1), as_of, seed=3), as_of)
    result = materialize()
    assert result.success
    checks = checks_by_name(result)
    assert checks["backtest_ran"].passed
    assert "calibration to 2024-09-01" in checks["backtest_ran"].description
    assert not checks["predictions_use_fitted_models"].passed  # 30 customers: naive_rate
    meta = metadata_of(result, "marts.prediction_backtest")
    assert meta["calibration_end"].value == "2024-09-01" and meta["holdout_days"].value == 121
    with duckdb.connect(str(dagster_env), read_only=True) as con:
        rows = con.execute(
            "select distinct calibration_end, holdout_end, backtest_status, prediction_method "
            "from marts.prediction_backtest"
        ).fetchall()
        assert rows == [(date(2024, 9, 1), as_of, "ran", "naive_rate")]


def test_dagster_missing_table_still_fails_fast(dagster_env):
    """A genuine error (the dbt models were never built) fails the run, not retried."""
    duckdb.connect(str(dagster_env)).close()
    result = materialize()
    assert not result.success
    failures = [
        e.event_specific_data.error.message
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    ]
    assert any("Reading the prediction inputs failed" in m for m in failures), failures
    assert "STEP_UP_FOR_RETRY" not in {e.event_type_value for e in result.all_events}
