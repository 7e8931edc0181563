"""Purchase predictions: BG/NBD (repeat purchases and dropout) and Gamma-Gamma (spend).

Why this package exists
-----------------------
Marketing wants to know who is about to buy, who is drifting away and what each customer is
worth. The field's standard answer for non-contractual retail is the BG/NBD model (Fader, Hardie
and Lee 2005) for *when* and *whether* customers buy again, and the Gamma-Gamma model (Fader,
Hardie and Lee 2005b; Fader and Hardie 2013) for *how much* they spend per purchase. The models
are fitted with ``pymc-marketing`` (maintained successor of ``lifetimes``); every prediction is a
closed-form numpy formula at the fitted parameters, so scoring millions of customers is cheap and
never creates per-draw rows. Nothing here imports Dagster: the asset wiring calls these functions.

Modules (laid out like ``pymc_marketing.clv``: one model family per module, then the steps)
-------------------------------------------------------------------------------------------
==========================  ==================================================================
``contract``                input contract (``read_customer_features``, ``prepare_features``),
                            output columns, ``FitResult`` / ``ModelStatus``, the rows of
                            ``clv_model_params`` (``model_params_table``)
``estimation``              MLE and convergence check on our own likelihoods, the
                            pymc-marketing fit with flat priors, ``validate_fit``
``beta_geo``                BG/NBD: likelihood, fits, closed-form predictions, simulation
``gamma_gamma``             Gamma-Gamma: likelihood, fits, expected spend
``naive``                   the fallback model ``naive_rate`` and the fallback spend
``churn``                   churn bands; thresholds from the seed ``churn_risk_bands``
``scoring``                 ``Scorer``, batch scoring (``score_customers``)
``fitting``                 fallback ladder (``fit_models``), ``run_predictions``
``summary``                 transactions -> model input (pymc-marketing's ``rfm_summary``)
``backtest``                ``backtest``: calibration fit, holdout metrics
``backtest_windows``        windows from the data's span, ``run_backtest``
==========================  ==================================================================

Fallbacks (documented, never NaN, never a crash)
------------------------------------------------
A model that cannot be fitted meaningfully is a property of the data (a young shop, a shop where
nobody has left yet), not an error: ``run_predictions`` never raises for a data reason. Every
model gets a ``fit_status`` and, unless fitted, a ``status_reason`` (``ModelStatus``), written to
``clv_model_params`` and shown by the Dagster WARN check ``predictions_use_fitted_models``.

* Prospects (never bought) have no row: they are not in the input (``read_customer_features``
  skips rows without tenure). BI left-joins predictions to customers; a missing row = prospect.
  No customer with a purchase at all (e.g. only refunded orders): the predictions table is empty
  (every column, typed), both models ``not_attempted``.
* BG/NBD ``not_attempted`` when the data are below any minimum: fewer than ``min_customers``
  (default 200) customers with a purchase, fewer than ``min_repeat_customers`` (30) repeat
  buyers (customers with two or more purchase days; none at all for a shop of one-time buyers or
  one-day orders), or a history shorter than ``min_history_days`` (90 days from the earliest
  first purchase to the as-of date: on a few weeks the BG/NBD cannot tell a slow buyer from one
  who left, and its estimates run to the edge of the parameter space). The reason lists every
  minimum that is not met, with the numbers.
* BG/NBD ``fallback`` when it was fitted but ``validate_fit`` rejects it (``FitError``): did not
  converge, a parameter outside its sane range (``DEFAULT_BOUNDS`` or the caller's ``bounds``;
  e.g. ``a`` near 0 when nobody shows any sign of dropout), or a non-finite value or
  log-likelihood; likewise when the fitting library fails numerically (``ArithmeticError``,
  ``LinAlgError``). The reason quotes ``validate_fit``'s message (the parameter, its value, the
  range, what to check). Other exceptions (a wrong option, a bug) propagate.
* Either way the predictions use ``prediction_method = 'naive_rate'``: rate lambda_i = (x_i +
  xbar) / (T_i + Tbar) (a Gamma-Poisson posterior mean with one average customer's worth of
  prior), P(alive) = exp(-lambda_i (T_i - t_x)), E[X(t)] = P(alive) lambda_i t, P(X(t)=0) = 1 -
  P(alive) + P(alive) e^(-lambda_i t), median wait ln 2 / lambda_i, AOV = (x m + mbar) / (x + 1)
  with mbar the population mean repeat spend (0 if no one has repeat purchases). Gamma-Gamma is
  then ``not_attempted`` ("the BG/NBD was not fitted").
* BG/NBD fitted, Gamma-Gamma ``not_attempted`` (fewer than ``min_repeat_customers`` repeat buyers
  with a positive spend) or ``fallback`` (rejected by ``validate_fit``, e.g. q <= 1: spend too
  heavy-tailed): ``prediction_method = 'bg_nbd_mean_spend'``, AOV as in the naive fallback.
* Both fitted: ``prediction_method = 'bg_nbd'``.
* Scoring that produces a non-finite number at accepted parameters would be a bug: ``score``
  raises ``FitError`` and nothing is written.

Fit statuses (``FIT_STATUSES``): ``fitted`` (fitted, validated, used for scoring),
``fallback`` (fit attempted and rejected, not used), ``not_attempted`` (below the minimums, or
the model it builds on was not fitted). The minimums and the bounds are parameters of
``run_predictions`` (and options of the Dagster asset).

Known limitation: BG/NBD lets customers drop out only after a repeat purchase, so every
one-time buyer has p_alive = 1 and churn band ``low``, however old the purchase (Fader, Hardie
and Lee's note 021 calls this a shortcoming of the model). Their expected purchases and
``p_no_purchase_90d`` do fall with T, and their next purchase date is NULL once the median wait
passes the horizon; use those (not the band) to rank one-time buyers.

"""

from customer_warehouse.predictions.backtest import backtest
from customer_warehouse.predictions.backtest_windows import (
    BacktestRun,
    BacktestWindows,
    backtest_windows,
    min_backtest_history_days,
    run_backtest,
)
from customer_warehouse.predictions.beta_geo import (
    _bg_ll_grad,
    _BgData,
    _fit_bg_nbd,
    bg_nbd_expected_purchases,
    bg_nbd_log_likelihood,
    bg_nbd_median_wait,
    bg_nbd_p_alive,
    bg_nbd_p_no_purchase,
    fit_bg_nbd,
    fit_bg_nbd_mle,
    simulate_bg_nbd,
)
from customer_warehouse.predictions.churn import (
    CHURN_BANDS,
    CHURN_BANDS_SEED,
    CHURN_BANDS_TABLE,
    churn_band,
    churn_thresholds_from_rows,
    default_churn_thresholds,
    read_churn_thresholds,
    validate_churn_thresholds,
)
from customer_warehouse.predictions.contract import (
    BACKTEST_COLUMNS,
    BACKTEST_STATUSES,
    BG_NBD_PARAMS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_BOUNDS,
    DEFAULT_HOLDOUT_DAYS,
    DEFAULT_HOLDOUT_FRACTION,
    DEFAULT_MIN_CALIBRATION_DAYS,
    DEFAULT_MIN_CUSTOMERS,
    DEFAULT_MIN_HISTORY_DAYS,
    DEFAULT_MIN_HOLDOUT_DAYS,
    DEFAULT_MIN_REPEAT_CUSTOMERS,
    FEATURE_COLUMNS,
    FIT_STATUSES,
    GAMMA_GAMMA_PARAMS,
    MONTH_DAYS,
    NUMERIC_PREDICTION_COLUMNS,
    PARAM_COLUMNS,
    PREDICTION_COLUMNS,
    PREDICTION_METHODS,
    TIME_UNITS,
    FitError,
    FitMethod,
    FitResult,
    ModelStatus,
    TimeUnit,
    model_params_table,
    prepare_features,
    read_customer_features,
)
from customer_warehouse.predictions.estimation import (
    DEFAULT_MCMC_KWARGS,
    MAP_OPTIONS,
    PYTENSOR_CACHE_DIR,
    use_project_compile_cache,
    validate_fit,
)
from customer_warehouse.predictions.fitting import (
    FitOptions,
    PredictionRun,
    fit_models,
    run_predictions,
)
from customer_warehouse.predictions.gamma_gamma import (
    _fit_gamma_gamma,
    _gg_ll_grad,
    _GgData,
    fit_gamma_gamma,
    fit_gamma_gamma_mle,
    gamma_gamma_expected_spend,
    gamma_gamma_log_likelihood,
)
from customer_warehouse.predictions.naive import NaiveRate
from customer_warehouse.predictions.scoring import (
    Scorer,
    iter_predictions,
    monthly_discount_factors,
    score_customers,
)
from customer_warehouse.predictions.summary import (
    PURCHASE_DAYS_TABLE,
    read_purchase_days,
    summarize_transactions,
)

__all__ = [
    "BACKTEST_COLUMNS",
    "BACKTEST_STATUSES",
    "BG_NBD_PARAMS",
    "BacktestRun",
    "BacktestWindows",
    "CHURN_BANDS",
    "CHURN_BANDS_SEED",
    "CHURN_BANDS_TABLE",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_BOUNDS",
    "DEFAULT_HOLDOUT_DAYS",
    "DEFAULT_HOLDOUT_FRACTION",
    "DEFAULT_MCMC_KWARGS",
    "DEFAULT_MIN_CALIBRATION_DAYS",
    "DEFAULT_MIN_CUSTOMERS",
    "DEFAULT_MIN_HISTORY_DAYS",
    "DEFAULT_MIN_HOLDOUT_DAYS",
    "DEFAULT_MIN_REPEAT_CUSTOMERS",
    "FEATURE_COLUMNS",
    "FIT_STATUSES",
    "FitError",
    "FitMethod",
    "FitOptions",
    "FitResult",
    "GAMMA_GAMMA_PARAMS",
    "MAP_OPTIONS",
    "MONTH_DAYS",
    "ModelStatus",
    "NUMERIC_PREDICTION_COLUMNS",
    "NaiveRate",
    "PARAM_COLUMNS",
    "PREDICTION_COLUMNS",
    "PREDICTION_METHODS",
    "PURCHASE_DAYS_TABLE",
    "PYTENSOR_CACHE_DIR",
    "PredictionRun",
    "Scorer",
    "TIME_UNITS",
    "TimeUnit",
    "_BgData",
    "_GgData",
    "_bg_ll_grad",
    "_fit_bg_nbd",
    "_fit_gamma_gamma",
    "_gg_ll_grad",
    "backtest",
    "backtest_windows",
    "bg_nbd_expected_purchases",
    "bg_nbd_log_likelihood",
    "bg_nbd_median_wait",
    "bg_nbd_p_alive",
    "bg_nbd_p_no_purchase",
    "churn_band",
    "churn_thresholds_from_rows",
    "default_churn_thresholds",
    "fit_bg_nbd",
    "fit_bg_nbd_mle",
    "fit_gamma_gamma",
    "fit_gamma_gamma_mle",
    "fit_models",
    "gamma_gamma_expected_spend",
    "gamma_gamma_log_likelihood",
    "iter_predictions",
    "min_backtest_history_days",
    "model_params_table",
    "monthly_discount_factors",
    "prepare_features",
    "read_churn_thresholds",
    "read_customer_features",
    "read_purchase_days",
    "run_backtest",
    "run_predictions",
    "score_customers",
    "simulate_bg_nbd",
    "summarize_transactions",
    "use_project_compile_cache",
    "validate_churn_thresholds",
    "validate_fit",
]
