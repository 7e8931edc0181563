"""Checks of the prediction asset.

* ``model_fit_is_sane`` (blocking, on ``marts/clv_model_params``): the fits converged and every
  parameter is finite and in its sane range -- ``predictions.validate_fit``, which
  ``run_predictions`` applies before anything is written. Failed, it carries the ``FitError``
  message (what is wrong and what to check) and the tables keep the previous predictions.
* ``one_prediction_per_customer`` (blocking, on ``marts/customer_predictions``): one row per
  customer of the features, no duplicate.
"""

import dagster as dg
import duckdb

from customer_warehouse import predictions
from orchestration.defs.metadata import quote_table, scalar, table_key

PREDICTIONS_KEY = table_key("marts.customer_predictions")
PARAMS_KEY = table_key("marts.clv_model_params")
FIT_CHECK = "model_fit_is_sane"
COVERAGE_CHECK = "one_prediction_per_customer"

PREDICTION_CHECK_SPECS = [
    dg.AssetCheckSpec(
        FIT_CHECK,
        asset=PARAMS_KEY,
        description="BG/NBD and Gamma-Gamma converged with sane parameters "
        "(customer_warehouse.predictions.validate_fit). On failure nothing is written.",
        blocking=True,
    ),
    dg.AssetCheckSpec(
        COVERAGE_CHECK,
        asset=PREDICTIONS_KEY,
        description="Exactly one prediction per customer of marts.customer_features.",
        blocking=True,
    ),
]


def fit_check_result(
    run: predictions.PredictionRun | None, error: str | None = None
) -> dg.AssetCheckResult:
    """The fit check from a finished run, or failed with the ``FitError`` message."""
    if run is None:
        return dg.AssetCheckResult(
            check_name=FIT_CHECK,
            asset_key=PARAMS_KEY,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=error,
            metadata={"error": dg.MetadataValue.text(error or "")},
        )
    metadata: dict[str, dg.RawMetadataValue] = {"method": run.scorer.method}
    for fit in (run.bg_fit, run.gg_fit):
        if fit is not None:
            metadata[f"{fit.model}_converged"] = fit.converged
            metadata[f"{fit.model}_log_likelihood"] = float(fit.log_likelihood)
            metadata[f"{fit.model}_customers_used"] = int(fit.customers_used)
            metadata[f"{fit.model}_params"] = dg.MetadataValue.json(
                {name: float(value) for name, value in fit.params.items()}
            )
    return dg.AssetCheckResult(
        check_name=FIT_CHECK,
        asset_key=PARAMS_KEY,
        passed=True,
        metadata=metadata,
        description=None if run.bg_fit else "No model fitted: too little history, fallback used.",
    )


def evaluate_prediction_checks(
    con: duckdb.DuckDBPyConnection, table: str, expected_rows: int
) -> list[dg.AssetCheckResult]:
    rows = int(scalar(con, f"select count(*) from {quote_table(table)}"))
    distinct = int(scalar(con, f"select count(distinct customer_id) from {quote_table(table)}"))
    return [
        dg.AssetCheckResult(
            check_name=COVERAGE_CHECK,
            asset_key=PREDICTIONS_KEY,
            passed=rows == distinct == expected_rows,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"rows": rows, "customers": distinct, "expected": expected_rows},
        )
    ]
