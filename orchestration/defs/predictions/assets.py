"""Purchase predictions (``customer_warehouse.predictions``): BG/NBD + Gamma-Gamma.

* ``customer_predictions`` (multi-asset ``marts/customer_predictions`` + ``marts/
  clv_model_params``): fit, validate, score. ``run_predictions`` raises ``FitError`` before
  anything is written when a fit does not converge or is absurd; the asset then reports the
  blocking check ``model_fit_is_sane`` as failed with that message, writes nothing and fails
  (not retried), so the previous predictions stay and nothing downstream runs.
* ``prediction_backtest`` (``marts/prediction_backtest``): fit as of ``as-of − holdout_days``,
  predict the holdout, compare. A separate step: a backtest problem never blocks predictions.

Both tables of a step are replaced in one transaction. The churn thresholds come from the
seed ``churn_risk_bands``.
"""

from collections.abc import Mapping
from datetime import date, timedelta

import dagster as dg
import duckdb
import pandas as pd

from customer_warehouse import predictions
from orchestration.defs.metadata import (
    counts_markdown,
    markdown_table,
    scalar,
    table_key,
    table_metadata,
    value_counts,
)
from orchestration.defs.predictions.checks import (
    PREDICTION_CHECK_SPECS,
    evaluate_prediction_checks,
    fit_check_result,
)
from orchestration.defs.resources import (
    LOCK_RETRY,
    WRITER_POOL,
    WarehouseResource,
    fail_fast_on_data_errors,
)

FEATURES_TABLE = "marts.customer_features"
AS_OF_TABLE = "intermediate.int_as_of_date"
CHURN_BANDS_TABLE = "seeds.churn_risk_bands"
PURCHASE_DAYS_TABLE = "intermediate.int_orders_aggregated_to_customer_days"
PREDICTIONS_TABLE = "marts.customer_predictions"
PARAMS_TABLE = "marts.clv_model_params"
BACKTEST_TABLE = "marts.prediction_backtest"
KINDS = {"python", "duckdb"}


class PredictionsConfig(dg.Config):
    """Fitting options (defaults: maximum likelihood on everyone, recency/T in days)."""

    method: str = "map"
    time_unit: str = "day"
    #: Fit on a random sample of this many customers (everyone is still scored); 0 = all.
    max_fit_customers: int = 0
    batch_size: int = predictions.DEFAULT_BATCH_SIZE
    #: Per-parameter [low, high] replacing predictions.DEFAULT_BOUNDS (stricter sanity).
    sane_bounds: dict[str, list[float]] = {}


class BacktestConfig(dg.Config):
    holdout_days: int = 182
    period_days: int = 7
    time_unit: str = "day"


def read_as_of_date(con: duckdb.DuckDBPyConnection) -> date:
    value = scalar(con, f"select max(as_of_date) from {AS_OF_TABLE}")
    if value is None:
        raise LookupError(f"{AS_OF_TABLE} is empty: build the dbt models first.")
    return value


def read_churn_thresholds(con: duckdb.DuckDBPyConnection) -> dict[str, float]:
    """The seed's thresholds. Its last band is named ``very_high`` where the predictions
    module says ``lost``; both mean "below the high threshold", so only low/medium/high are
    passed on."""
    rows = con.execute(f"select band, min_p_alive from {CHURN_BANDS_TABLE}").df()
    rows = rows[rows["band"].isin(["low", "medium", "high"])]
    return predictions.churn_thresholds_from_rows(rows)


def replace_tables(con: duckdb.DuckDBPyConnection, frames: Mapping[str, pd.DataFrame]) -> None:
    """Replace each table by its DataFrame, all in one transaction (all or nothing)."""
    con.execute("create schema if not exists marts")
    con.begin()
    try:
        for table, frame in frames.items():
            con.register("_frame", frame)
            try:
                con.execute(f"create or replace table {table} as select * from _frame")
            finally:
                con.unregister("_frame")
        con.commit()
    except BaseException:
        con.rollback()
        raise


@dg.multi_asset(
    name="customer_predictions",
    specs=[
        dg.AssetSpec(
            key=table_key(PREDICTIONS_TABLE),
            group_name="marts",
            kinds=KINDS,
            description="One row per customer who bought: P(alive), expected purchases "
            "30/90/365 days, expected order value, 12-month CLV, next purchase date, churn band.",
            deps=[table_key(t) for t in (FEATURES_TABLE, AS_OF_TABLE, CHURN_BANDS_TABLE)],
            skippable=True,  # not written when the fit check fails
        ),
        dg.AssetSpec(
            key=table_key(PARAMS_TABLE),
            group_name="marts",
            kinds=KINDS,
            description="Fitted BG/NBD and Gamma-Gamma parameters, log-likelihood, convergence.",
            deps=[table_key(FEATURES_TABLE)],
            skippable=True,
        ),
    ],
    check_specs=PREDICTION_CHECK_SPECS,
    can_subset=False,
    pool=WRITER_POOL,
    retry_policy=LOCK_RETRY,
    description="Fit BG/NBD and Gamma-Gamma on marts.customer_features and score everyone.",
)
def customer_predictions(
    context: dg.AssetExecutionContext, config: PredictionsConfig, warehouse: WarehouseResource
):
    with warehouse.connect() as con:
        with fail_fast_on_data_errors("Reading the prediction inputs"):
            as_of = read_as_of_date(con)
            features = predictions.read_customer_features(con, FEATURES_TABLE)
            thresholds = read_churn_thresholds(con)
        fit_error: str | None = None
        with fail_fast_on_data_errors("Fitting the purchase models"):
            try:
                run = predictions.run_predictions(
                    features,
                    as_of,
                    time_unit=config.time_unit,
                    method=config.method,
                    churn_thresholds=thresholds,
                    batch_size=config.batch_size,
                    max_fit_customers=config.max_fit_customers or None,
                    bounds={k: (v[0], v[1]) for k, v in config.sane_bounds.items()} or None,
                )
            except predictions.FitError as exc:
                fit_error = str(exc)
        if fit_error is not None:
            # The failed check is recorded, the step fails with the reason, nothing is
            # written (the previous predictions stay) and nothing downstream runs.
            yield fit_check_result(None, error=fit_error)
            raise dg.Failure(
                description=f"Predictions not updated: {fit_error}", allow_retries=False
            )
        replace_tables(con, {PREDICTIONS_TABLE: run.predictions, PARAMS_TABLE: run.params})
        predictions_meta = table_metadata(con, PREDICTIONS_TABLE, with_preview=True)
        params_meta = table_metadata(con, PARAMS_TABLE)
        bands = value_counts(con, PREDICTIONS_TABLE, "churn_risk_band")
        methods = value_counts(con, PREDICTIONS_TABLE, "prediction_method")
        checks = evaluate_prediction_checks(con, PREDICTIONS_TABLE, expected_rows=len(features))
    common = {"as_of_date": dg.MetadataValue.text(as_of.isoformat())}
    yield dg.MaterializeResult(
        asset_key=table_key(PREDICTIONS_TABLE),
        metadata={
            **predictions_meta,
            **common,
            "churn_risk_band_counts": dg.MetadataValue.md(
                counts_markdown(bands, "churn_risk_band", "customers")
            ),
            "prediction_method_counts": dg.MetadataValue.md(
                counts_markdown(methods, "prediction_method", "customers")
            ),
            "total_clv_12m": dg.MetadataValue.float(float(run.predictions["clv_12m"].sum())),
        },
    )
    yield dg.MaterializeResult(
        asset_key=table_key(PARAMS_TABLE),
        metadata={
            **params_meta,
            **common,
            "parameters": dg.MetadataValue.md(
                markdown_table(
                    ["model", "parameter", "value", "converged"],
                    run.params[["model", "parameter", "value", "converged"]].itertuples(
                        index=False
                    ),
                )
                if not run.params.empty
                else "no model fitted (fallback: too little history)"
            ),
        },
    )
    yield fit_check_result(run)
    yield from checks


@dg.asset(
    key=table_key(BACKTEST_TABLE),
    group_name="marts",
    kinds=KINDS,
    deps=[table_key(t) for t in (PURCHASE_DAYS_TABLE, AS_OF_TABLE, CHURN_BANDS_TABLE)],
    pool=WRITER_POOL,
    retry_policy=LOCK_RETRY,
    description="Calibration/holdout backtest of the purchase models: fit as of the as-of date "
    "minus holdout_days, predict the holdout, compare with what happened.",
)
def prediction_backtest(
    context: dg.AssetExecutionContext, config: BacktestConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    with warehouse.connect() as con:
        with fail_fast_on_data_errors("The prediction backtest"):
            as_of = read_as_of_date(con)
            calibration_end = as_of - timedelta(days=config.holdout_days)
            transactions = con.execute(
                f"select customer_id, purchase_date, revenue as value from {PURCHASE_DAYS_TABLE}"
            ).df()
            table = predictions.backtest(
                transactions,
                calibration_end,
                as_of,
                config.time_unit,
                period_days=config.period_days,
                churn_thresholds=read_churn_thresholds(con),
            )
            replace_tables(con, {BACKTEST_TABLE: table})
        metadata = table_metadata(con, BACKTEST_TABLE)
    headline = table[
        (table["phase"] == "holdout") & (table["segment"] == "all") & (table["period_index"].isna())
    ][["metric", "value", "customers"]]
    context.log.info(f"Backtest {calibration_end} → {as_of}: {len(table)} rows")
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "as_of_date": dg.MetadataValue.text(as_of.isoformat()),
            "calibration_end": dg.MetadataValue.text(calibration_end.isoformat()),
            "holdout_metrics": dg.MetadataValue.md(
                markdown_table(
                    ["metric", "value", "customers"],
                    [(m, f"{v:.4g}", c) for m, v, c in headline.itertuples(index=False)],
                )
            ),
        }
    )
