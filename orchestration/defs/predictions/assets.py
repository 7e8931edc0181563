"""Purchase predictions (``customer_warehouse.predictions``): BG/NBD + Gamma-Gamma.

* ``customer_predictions`` (multi-asset ``marts/customer_predictions`` + ``marts/
  clv_model_params``): fit, validate, score. A model that cannot be fitted meaningfully (too
  little history, too few (repeat) buyers, estimates at the edge of the parameter space, no
  convergence) is not an error: the predictions use the documented fallback, every model's
  ``fit_status`` and ``status_reason`` are written to ``clv_model_params``, logged, shown in the
  materialization metadata, and the WARN check ``predictions_use_fitted_models`` fails with the
  reason while the run goes on. The blocking checks (``model_fit_is_sane``,
  ``one_prediction_per_customer``, ``predictions_are_finite``) catch bugs only; if scoring ever
  produced a non-finite number, nothing is written and the step fails.
* ``prediction_backtest`` (``marts/prediction_backtest``): windows from the data's span (holdout
  = min(holdout_days, holdout_fraction x history) before the as-of date), fit on the
  calibration period, predict the holdout, compare. Too short a history: the backtest is
  skipped, the table holds one ``skipped`` row with the reason, and the WARN check
  ``backtest_ran`` fails. A separate step: a backtest problem never blocks predictions.

Both tables of a step are replaced in one transaction. The churn thresholds come from the
seed ``churn_risk_bands`` (``predictions.read_churn_thresholds``). Missing or broken input
tables still fail at once (``fail_fast_on_data_errors``).
"""

import dagster as dg
import duckdb

from customer_warehouse import predictions
from customer_warehouse.warehouse import AS_OF_TABLE, read_as_of_date, replace_tables
from orchestration.defs.metadata import (
    counts_markdown,
    markdown_table,
    table_key,
    table_metadata,
    value_counts,
)
from orchestration.defs.predictions.checks import (
    BACKTEST_CHECK_SPECS,
    PREDICTION_CHECK_SPECS,
    backtest_check_result,
    evaluate_prediction_checks,
    fit_check_result,
    fitted_models_check_result,
)
from orchestration.defs.resources import (
    WRITES_WAREHOUSE,
    WarehouseResource,
    fail_fast_on_data_errors,
)

FEATURES_TABLE = "marts.customer_features"
CHURN_BANDS_TABLE = predictions.CHURN_BANDS_TABLE
PURCHASE_DAYS_TABLE = predictions.PURCHASE_DAYS_TABLE
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
    #: Minimums below which no fit is attempted (fallback naive_rate / bg_nbd_mean_spend).
    min_customers: int = predictions.DEFAULT_MIN_CUSTOMERS
    min_repeat_customers: int = predictions.DEFAULT_MIN_REPEAT_CUSTOMERS
    min_history_days: int = predictions.DEFAULT_MIN_HISTORY_DAYS


class BacktestConfig(dg.Config):
    """Backtest windows (``predictions.backtest_windows``): holdout = min(holdout_days,
    holdout_fraction x history days); skipped below the two minimums."""

    holdout_days: int = predictions.DEFAULT_HOLDOUT_DAYS
    holdout_fraction: float = predictions.DEFAULT_HOLDOUT_FRACTION
    min_calibration_days: int = predictions.DEFAULT_MIN_CALIBRATION_DAYS
    min_holdout_days: int = predictions.DEFAULT_MIN_HOLDOUT_DAYS
    period_days: int = 7
    time_unit: str = "day"


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
            skippable=True,  # not written when scoring fails (a bug, see the docstring)
        ),
        dg.AssetSpec(
            key=table_key(PARAMS_TABLE),
            group_name="marts",
            kinds=KINDS,
            description="Fitted BG/NBD and Gamma-Gamma parameters, log-likelihood, "
            "convergence, and each model's fit_status and status_reason (one row per model "
            "when it was not fitted).",
            deps=[table_key(FEATURES_TABLE)],
            skippable=True,
        ),
    ],
    check_specs=PREDICTION_CHECK_SPECS,
    can_subset=False,
    **WRITES_WAREHOUSE,
    description="Fit BG/NBD and Gamma-Gamma on marts.customer_features and score everyone.",
)
def customer_predictions(
    context: dg.AssetExecutionContext, config: PredictionsConfig, warehouse: WarehouseResource
):
    bounds = {k: (v[0], v[1]) for k, v in config.sane_bounds.items()} or None
    with warehouse.connect() as con:
        as_of, features, thresholds = _read_prediction_inputs(con)
        run, scoring_error = _fit_and_score(features, as_of, thresholds, bounds, config)
        if run is None:
            # The failed check is recorded, the step fails with the reason, nothing is
            # written (the previous predictions stay) and nothing downstream runs.
            yield fit_check_result(None, error=scoring_error)
            raise dg.Failure(
                description=f"Predictions not updated: {scoring_error}", allow_retries=False
            )
        replace_tables(con, {PREDICTIONS_TABLE: run.predictions, PARAMS_TABLE: run.params})
        results = _prediction_results(con, run, as_of, expected_rows=len(features), bounds=bounds)
    for model, reason in run.fallback_reasons.items():
        context.log.warning(f"{model}: {reason}")
    yield from results


def _read_prediction_inputs(con: duckdb.DuckDBPyConnection):
    """The as-of date, the features and the seed's churn thresholds (missing tables fail)."""
    with fail_fast_on_data_errors("Reading the prediction inputs"):
        return (
            read_as_of_date(con),
            predictions.read_customer_features(con, FEATURES_TABLE),
            predictions.read_churn_thresholds(con, CHURN_BANDS_TABLE),
        )


def _fit_and_score(features, as_of, thresholds, bounds, config: PredictionsConfig):
    """``(run, None)``, or ``(None, reason)`` when scoring produced a non-finite number."""
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
                bounds=bounds,
                min_customers=config.min_customers,
                min_repeat_customers=config.min_repeat_customers,
                min_history_days=config.min_history_days,
            )
        except predictions.FitError as exc:
            # Fits that are not meaningful fall back inside run_predictions; a FitError
            # here means scoring produced a non-finite number, which is a bug.
            return None, str(exc)
    return run, None


def _status_metadata(run: predictions.PredictionRun, as_of) -> dict:
    """Metadata of both tables: the as-of date, the method, each model's status and reason."""
    return {
        "as_of_date": dg.MetadataValue.text(as_of.isoformat()),
        "prediction_method": dg.MetadataValue.text(run.scorer.method),
        **{f"{s.model}_fit_status": dg.MetadataValue.text(s.status) for s in run.statuses},
        "status_reasons": dg.MetadataValue.md(
            markdown_table(
                ["model", "fit_status", "status_reason"],
                [(s.model, s.status, s.reason or "") for s in run.statuses],
            )
        ),
    }


def _prediction_results(con, run: predictions.PredictionRun, as_of, *, expected_rows, bounds):
    """The two materializations and the checks of the written tables."""
    status_meta = _status_metadata(run, as_of)
    bands = value_counts(con, PREDICTIONS_TABLE, "churn_risk_band")
    methods = value_counts(con, PREDICTIONS_TABLE, "prediction_method")
    fitted = run.params[run.params["fit_status"] == "fitted"]
    return [
        dg.MaterializeResult(
            asset_key=table_key(PREDICTIONS_TABLE),
            metadata={
                **table_metadata(con, PREDICTIONS_TABLE, with_preview=True),
                **status_meta,
                "churn_risk_band_counts": dg.MetadataValue.md(
                    counts_markdown(bands, "churn_risk_band", "customers")
                ),
                "prediction_method_counts": dg.MetadataValue.md(
                    counts_markdown(methods, "prediction_method", "customers")
                ),
                "total_clv_12m": dg.MetadataValue.float(float(run.predictions["clv_12m"].sum())),
            },
        ),
        dg.MaterializeResult(
            asset_key=table_key(PARAMS_TABLE),
            metadata={
                **table_metadata(con, PARAMS_TABLE),
                **status_meta,
                "parameters": dg.MetadataValue.md(
                    markdown_table(
                        ["model", "parameter", "value", "converged"],
                        fitted[["model", "parameter", "value", "converged"]].itertuples(
                            index=False
                        ),
                    )
                    if not fitted.empty
                    else f"no model fitted (fallback {run.scorer.method}): see status_reasons"
                ),
            },
        ),
        fit_check_result(run, bounds=bounds, con=con, params_table=PARAMS_TABLE),
        fitted_models_check_result(run),
        *evaluate_prediction_checks(con, PREDICTIONS_TABLE, expected_rows=expected_rows),
    ]


@dg.asset(
    key=table_key(BACKTEST_TABLE),
    group_name="marts",
    kinds=KINDS,
    deps=[table_key(t) for t in (PURCHASE_DAYS_TABLE, AS_OF_TABLE, CHURN_BANDS_TABLE)],
    check_specs=BACKTEST_CHECK_SPECS,
    **WRITES_WAREHOUSE,
    description="Calibration/holdout backtest of the purchase models: the holdout is the last "
    "min(holdout_days, a third of the history) days before the as-of date; fit on the rest, "
    "predict the holdout, compare with what happened. Skipped with a reason (one 'skipped' row) "
    "when the history is too short.",
)
def prediction_backtest(
    context: dg.AssetExecutionContext, config: BacktestConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    with warehouse.connect() as con:
        with fail_fast_on_data_errors("The prediction backtest"):
            as_of = read_as_of_date(con)
            bt = predictions.run_backtest(
                predictions.read_purchase_days(con, PURCHASE_DAYS_TABLE),
                as_of,
                churn_thresholds=predictions.read_churn_thresholds(con, CHURN_BANDS_TABLE),
                **config.model_dump(),
            )
            replace_tables(con, {BACKTEST_TABLE: bt.table})
        metadata = table_metadata(con, BACKTEST_TABLE)
    table, w = bt.table, bt.windows
    metadata = {
        **metadata,
        "as_of_date": dg.MetadataValue.text(as_of.isoformat()),
        "backtest_status": dg.MetadataValue.text(bt.status),
        "status_reason": dg.MetadataValue.text(bt.reason or ""),
        "history_days": dg.MetadataValue.int(w.history_days),
        "holdout_days": dg.MetadataValue.int(w.holdout_days),
        "calibration_end": dg.MetadataValue.text(
            "" if w.calibration_end is None else w.calibration_end.isoformat()
        ),
    }
    if bt.skipped:
        context.log.warning(bt.reason or "Backtest skipped")
    else:
        headline = table[
            (table["phase"] == "holdout")
            & (table["segment"] == "all")
            & (table["period_index"].isna())
        ][["metric", "value", "customers"]]
        context.log.info(
            f"Backtest {w.calibration_end} → {as_of} ({bt.prediction_method}): {len(table)} rows"
        )
        if bt.reason:
            context.log.warning(bt.reason)
        metadata["prediction_method"] = dg.MetadataValue.text(bt.prediction_method or "")
        metadata["holdout_metrics"] = dg.MetadataValue.md(
            markdown_table(
                ["metric", "value", "customers"],
                [(m, f"{v:.4g}", c) for m, v, c in headline.itertuples(index=False)],
            )
        )
    return dg.MaterializeResult(metadata=metadata, check_results=[backtest_check_result(bt)])
