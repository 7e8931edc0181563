"""Checks of the prediction assets.

A model that cannot be fitted meaningfully is a property of the data, not an error: the
predictions fall back and say so (``customer_warehouse.predictions``, "Fallbacks"). So the
blocking checks only catch what would be a bug, and the data's limits are warnings:

* ``model_fit_is_sane`` (blocking, on ``marts/clv_model_params``): every model used for scoring
  converged with finite parameters in their sane ranges (``predictions.validate_fit`` again,
  with the run's bounds), the scorer uses exactly those parameters, and the written table has
  one status per model, finite values for fitted parameters and a reason for every model that
  was not fitted. Failed only by a bug (or by scoring producing NaN: then nothing is written).
* ``predictions_use_fitted_models`` (WARN, not blocking, on ``marts/clv_model_params``): passes
  when both models were fitted (``prediction_method = 'bg_nbd'``); otherwise fails with
  severity WARN and the reason of each model that fell back or was not attempted.
* ``one_prediction_per_customer`` (blocking, on ``marts/customer_predictions``): one row per
  customer of the features, no duplicate.
* ``predictions_are_finite`` (blocking, on ``marts/customer_predictions``): no NaN, infinity or
  NULL in a numeric column, no NULL key, method or band.
* ``backtest_ran`` (WARN, not blocking, on ``marts/prediction_backtest``): fails with severity
  WARN and the reason when the backtest was skipped (history too short).
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg
import duckdb

from customer_warehouse import predictions
from customer_warehouse.warehouse import quote_table, scalar
from orchestration.defs.metadata import table_key

PREDICTIONS_KEY = table_key("marts.customer_predictions")
PARAMS_KEY = table_key("marts.clv_model_params")
BACKTEST_KEY = table_key("marts.prediction_backtest")
FIT_CHECK = "model_fit_is_sane"
FITTED_CHECK = "predictions_use_fitted_models"
COVERAGE_CHECK = "one_prediction_per_customer"
FINITE_CHECK = "predictions_are_finite"
BACKTEST_CHECK = "backtest_ran"
MODELS = ("bg_nbd", "gamma_gamma")
#: Numeric columns of marts.customer_predictions and the columns that are never NULL.
NUMERIC_COLUMNS = predictions.NUMERIC_PREDICTION_COLUMNS
NOT_NULL_COLUMNS = ("customer_id", "as_of_date", "churn_risk_band", "prediction_method")

PREDICTION_CHECK_SPECS = [
    dg.AssetCheckSpec(
        FIT_CHECK,
        asset=PARAMS_KEY,
        description="The models used for scoring converged with sane parameters "
        "(customer_warehouse.predictions.validate_fit); every model has a status, and a reason "
        "when it was not fitted. A model that cannot be fitted falls back (see "
        f"{FITTED_CHECK}), so this fails only for a bug.",
        blocking=True,
    ),
    dg.AssetCheckSpec(
        FITTED_CHECK,
        asset=PARAMS_KEY,
        description="BG/NBD and Gamma-Gamma were both fitted. Fails with severity WARN and the "
        "reason (too little history, estimates at the edge of the parameter space, no repeat "
        "buyers, ...) when the predictions use a fallback; the run goes on.",
        blocking=False,
    ),
    dg.AssetCheckSpec(
        COVERAGE_CHECK,
        asset=PREDICTIONS_KEY,
        description="Exactly one prediction per customer of marts.customer_features.",
        blocking=True,
    ),
    dg.AssetCheckSpec(
        FINITE_CHECK,
        asset=PREDICTIONS_KEY,
        description="No NaN, infinity or NULL in a numeric prediction; no NULL customer_id, "
        "as_of_date, churn_risk_band or prediction_method.",
        blocking=True,
    ),
]

BACKTEST_CHECK_SPECS = [
    dg.AssetCheckSpec(
        BACKTEST_CHECK,
        asset=BACKTEST_KEY,
        description="The backtest ran. Fails with severity WARN and the reason when it was "
        "skipped because the purchase history is too short for a calibration period and a "
        "holdout; the run goes on.",
        blocking=False,
    ),
]


def _check(
    name: str,
    key: dg.AssetKey,
    passed: bool,
    severity: dg.AssetCheckSeverity,
    metadata: Mapping[str, dg.RawMetadataValue],
    description: str | None,
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        asset_key=key,
        passed=passed,
        severity=severity,
        metadata=dict(metadata),
        description=description,
    )


def _bounds_metadata(bounds: Mapping[str, tuple[float, float]] | None) -> dict:
    return {k: [float(v[0]), float(v[1])] for k, v in (bounds or {}).items()}


def fit_check_result(
    run: predictions.PredictionRun | None,
    error: str | None = None,
    *,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    params_table: str = "marts.clv_model_params",
) -> dg.AssetCheckResult:
    """The blocking fit check of a finished run (with ``con``: also of the written table), or
    failed with ``error`` when the run produced nothing (scoring gave a non-finite number)."""
    if run is None:
        error_meta = {"error": dg.MetadataValue.text(error or "")}
        return _check(FIT_CHECK, PARAMS_KEY, False, dg.AssetCheckSeverity.ERROR, error_meta, error)
    problems: list[str] = []
    metadata: dict[str, dg.RawMetadataValue] = {"method": run.scorer.method}
    for status in run.statuses:
        metadata[f"{status.model}_fit_status"] = status.status
        if status.status not in predictions.FIT_STATUSES:
            problems.append(f"{status.model}: unknown fit_status {status.status!r}")
        if status.status == "fitted":
            fit = status.fit
            if fit is None:
                problems.append(f"{status.model}: status fitted without a fit")
                continue
            try:
                predictions.validate_fit(fit, bounds)
            except predictions.FitError as exc:
                problems.append(f"{status.model} is used for scoring although: {exc}")
            metadata[f"{fit.model}_converged"] = fit.converged
            metadata[f"{fit.model}_log_likelihood"] = float(fit.log_likelihood)
            metadata[f"{fit.model}_customers_used"] = int(fit.customers_used)
            metadata[f"{fit.model}_params"] = dg.MetadataValue.json(
                {name: float(value) for name, value in fit.params.items()}
            )
        elif not status.reason:
            problems.append(f"{status.model} is {status.status} but has no reason")
    for used, scored in ((run.bg_fit, run.scorer.bg_params), (run.gg_fit, run.scorer.gg_params)):
        if (None if used is None else dict(used.params)) != scored:
            problems.append("the scorer does not use the validated parameters")
    if con is not None:
        problems += _params_table_problems(con, params_table)
    if bounds:
        metadata["sane_bounds"] = dg.MetadataValue.json(_bounds_metadata(bounds))
    return _check(
        FIT_CHECK,
        PARAMS_KEY,
        not problems,
        dg.AssetCheckSeverity.ERROR,
        metadata,
        "; ".join(problems)
        if problems
        else "Every model used for scoring converged with sane parameters."
        if run.bg_fit
        else f"No model used for scoring (fallback {run.scorer.method}; see {FITTED_CHECK}).",
    )


def _params_table_problems(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """Structural rules of the written clv_model_params."""
    rows = con.execute(
        f"""
        select
            model,
            count(distinct fit_status),
            min(fit_status),
            count(*) filter (where fit_status = 'fitted' and not coalesce(isfinite(value), false)),
            count(*) filter (where fit_status <> 'fitted' and status_reason is null)
        from {quote_table(table)}
        group by model
        """
    ).fetchall()
    found = {model: rest for model, *rest in rows}
    problems = [f"{model} has no row in {table}" for model in MODELS if model not in found]
    for model, (n_status, status, bad_values, no_reason) in found.items():
        if n_status != 1 or status not in predictions.FIT_STATUSES:
            problems.append(f"{model} has no single valid fit_status in {table}")
        if bad_values:
            problems.append(f"{model} has {bad_values} fitted parameter(s) that are not finite")
        if no_reason:
            problems.append(f"{model} is not fitted but its status_reason is NULL")
    return problems


def fitted_models_check_result(run: predictions.PredictionRun) -> dg.AssetCheckResult:
    """WARN when the predictions use a fallback, with each model's reason."""
    reasons = run.fallback_reasons
    metadata: dict[str, dg.RawMetadataValue] = {"prediction_method": run.scorer.method}
    for status in run.statuses:
        metadata[f"{status.model}_fit_status"] = status.status
        metadata[f"{status.model}_status_reason"] = dg.MetadataValue.text(status.reason or "")
        if status.status == "fallback" and status.fit is not None:
            # The rejected estimates, for whoever investigates (never used for scoring).
            metadata[f"{status.model}_rejected_params"] = dg.MetadataValue.json(
                {name: repr(float(value)) for name, value in status.fit.params.items()}
            )
    return _check(
        FITTED_CHECK,
        PARAMS_KEY,
        not reasons,
        dg.AssetCheckSeverity.WARN,
        metadata,
        " | ".join(f"{model}: {reason}" for model, reason in reasons.items())
        if reasons
        else "BG/NBD and Gamma-Gamma fitted; predictions use bg_nbd.",
    )


def evaluate_prediction_checks(
    con: duckdb.DuckDBPyConnection, table: str, expected_rows: int
) -> list[dg.AssetCheckResult]:
    rows = int(scalar(con, f"select count(*) from {quote_table(table)}"))
    distinct = int(scalar(con, f"select count(distinct customer_id) from {quote_table(table)}"))
    not_finite = " or ".join(f"not coalesce(isfinite({c}), false)" for c in NUMERIC_COLUMNS)
    is_null = " or ".join(f"{c} is null" for c in NOT_NULL_COLUMNS)
    bad = int(
        scalar(con, f"select count(*) from {quote_table(table)} where {not_finite} or {is_null}")
    )
    error = dg.AssetCheckSeverity.ERROR
    coverage = {"rows": rows, "customers": distinct, "expected": expected_rows}
    return [
        _check(
            COVERAGE_CHECK,
            PREDICTIONS_KEY,
            rows == distinct == expected_rows,
            error,
            coverage,
            None,
        ),
        _check(
            FINITE_CHECK, PREDICTIONS_KEY, bad == 0, error, {"rows_with_nan_inf_or_null": bad}, None
        ),
    ]


def backtest_check_result(run: predictions.BacktestRun) -> dg.AssetCheckResult:
    """WARN when the backtest was skipped, with the reason."""
    w = run.windows
    metadata: dict[str, dg.RawMetadataValue] = {
        "backtest_status": run.status,
        "history_days": int(w.history_days),
        "min_history_days": int(w.min_history_days),
        "holdout_days": int(w.holdout_days),
        "calibration_end": "" if w.calibration_end is None else w.calibration_end.isoformat(),
        "holdout_end": w.holdout_end.isoformat(),
        "prediction_method": run.prediction_method or "",
    }
    if run.skipped:
        description = run.reason
    else:
        description = (
            f"Backtest ran: calibration to {w.calibration_end}, holdout "
            f"{w.holdout_days} days to {w.holdout_end}, method {run.prediction_method}."
        )
        if run.reason:
            description += f" {run.reason}"
    return _check(
        BACKTEST_CHECK,
        BACKTEST_KEY,
        not run.skipped,
        dg.AssetCheckSeverity.WARN,
        metadata,
        description,
    )
