"""Fitting machinery shared by the model families: maximum likelihood on this package's own
likelihoods, the convergence check, the pymc-marketing fit with flat priors, and
``validate_fit``.

Reads and writes no table. The model modules (``beta_geo``, ``gamma_gamma``) hand in a
likelihood-and-gradient function; pymc-marketing does the fitting, and the hand-written
likelihood judges its result (``_diagnostics``): pymc's optimizer reports no standard errors or
distance to the optimum, and its ``find_MAP`` tolerance loosens with the number of customers, so
convergence is checked on a likelihood this package controls (and whose gradient it has in
closed form). The same likelihood gives ``log_likelihood`` in ``clv_model_params``, comparable
across MAP and MCMC.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize

from customer_warehouse.config import PROJECT_DIR
from customer_warehouse.predictions.contract import (
    DEFAULT_BOUNDS,
    TIME_UNITS,
    FitError,
    FitMethod,
    FitResult,
    TimeUnit,
    _as_date,
    prepare_features,
)

#: Maps log-parameters to (log-likelihood, its gradient).
LikelihoodGradient = Callable[[np.ndarray], tuple[float, np.ndarray]]


def _diagnostics(
    ll_grad: LikelihoodGradient,
    log_theta: np.ndarray,
    names: tuple[str, ...],
) -> dict[str, Any]:
    """Convergence evidence at a claimed optimum, independent of the optimizer that found it.

    The Hessian in log-parameter space comes from central differences of the analytic gradient.
    ``newton_step_se`` = sqrt(g' (-H)^-1 g) is the distance to the true maximum in units of the
    statistical standard error (Mahalanobis norm of the remaining Newton step); 0.05 means the
    optimizer stopped 5 % of a standard error away, negligible next to the sampling noise.
    A Hessian that is not negative definite means a flat or saddle direction (unidentified
    parameters), which is reported as not converged.
    """
    k = log_theta.size
    _, g = ll_grad(log_theta)
    h = 1e-5
    H = np.empty((k, k))
    for j in range(k):
        e = np.zeros(k)
        e[j] = h
        H[:, j] = (ll_grad(log_theta + e)[1] - ll_grad(log_theta - e)[1]) / (2 * h)
    H = (H + H.T) / 2
    out: dict[str, Any] = {"gradient_log_params": dict(zip(names, g.tolist(), strict=True))}
    eig = np.linalg.eigvalsh(-H)
    if not np.all(np.isfinite(H)) or eig.min() <= 0:
        out.update(newton_step_se=math.inf, negative_definite=False, std_errors=None)
        return out
    cov = np.linalg.inv(-H)
    step = cov @ g
    theta = np.exp(log_theta)
    # Delta method: SE(theta) = theta * SE(log theta).
    se = theta * np.sqrt(np.diag(cov))
    out.update(
        newton_step_se=float(np.sqrt(max(g @ step, 0.0))),
        negative_definite=True,
        std_errors=dict(zip(names, se.tolist(), strict=True)),
    )
    return out


def _mle(ll_grad: LikelihoodGradient, start: np.ndarray, n: float) -> optimize.OptimizeResult:
    def neg(lt: np.ndarray) -> tuple[float, np.ndarray]:
        ll, g = ll_grad(lt)
        if not np.isfinite(ll):
            return 1e300, np.zeros_like(lt)
        return -ll / n, -g / n

    bounds = [(-25.0, 25.0)] * start.size
    return optimize.minimize(
        neg,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10},
    )


@dataclass(frozen=True)
class ModelFamily:
    """What the shared fitting code needs to know about one model family: its name in
    ``clv_model_params``, its parameters, its pymc-marketing class (in ``pymc_marketing.clv``),
    the feature columns that class reads, how to build this package's likelihood-and-gradient
    function from those columns, and which customers the model can use."""

    name: str
    params: tuple[str, ...]
    pymc_class: str
    columns: tuple[str, ...]
    likelihood: Callable[[pd.DataFrame], LikelihoodGradient]
    #: The customers the model can use (may raise ``FitError`` when none is left).
    usable: Callable[[pd.DataFrame], pd.DataFrame] | None = None


def fit_features(
    family: ModelFamily,
    data: Any,
    method: FitMethod = "map",
    *,
    time_unit: TimeUnit = "day",
    as_of_date: date | str | None = None,
    mcmc_kwargs: Mapping[str, Any] | None = None,
    converge_tol_se: float = 0.05,
) -> FitResult:
    """Fit ``family`` on customer features (``contract.prepare_features`` input), the public
    fits' common path. ``method="map"``: maximum likelihood (MAP with flat priors);
    ``method="mcmc"``: NUTS with the same priors, ``params`` the posterior means and
    ``intervals`` the 94 % equal-tailed intervals. ``converge_tol_se``: see ``validate_fit``."""
    df = prepare_features(data, time_unit)
    return fit_family(family, df, method, time_unit, as_of_date, mcmc_kwargs, converge_tol_se)


def fit_family(
    family: ModelFamily,
    df: pd.DataFrame,
    method: str,
    time_unit: str,
    as_of_date: date | str | None,
    mcmc_kwargs: Mapping[str, Any] | None,
    converge_tol_se: float = 0.05,
) -> FitResult:
    """Fit ``family`` with pymc-marketing on prepared features (recency/T in ``time_unit``)."""
    use_project_compile_cache()
    import pymc_marketing.clv

    if family.usable is not None:
        df = family.usable(df)
    # The ids do not matter for fitting; a range index keeps pymc's coords cheap.
    frame = pd.DataFrame(
        {"customer_id": np.arange(len(df)), **{c: df[c].to_numpy() for c in family.columns}}
    )
    return _fit_with_pymc(
        family.name,
        getattr(pymc_marketing.clv, family.pymc_class),
        family.params,
        frame,
        family.likelihood(frame),
        method=method,
        time_unit=time_unit,
        as_of_date=as_of_date,
        mcmc_kwargs=mcmc_kwargs,
        converge_tol_se=converge_tol_se,
    )


def _mle_fit(
    family: ModelFamily,
    ll_grad: LikelihoodGradient,
    start: np.ndarray,
    n: float,
    customers_used: int,
    time_unit: str,
    as_of_date: date | str | None,
    converge_tol_se: float,
) -> FitResult:
    """Maximum likelihood with scipy on one of this package's likelihoods, as a ``FitResult``
    (``method = 'scipy_mle'``): the independent cross-check of the pymc-marketing fit."""
    names = family.params
    res = _mle(ll_grad, start, n)
    diag = _diagnostics(ll_grad, res.x, names)
    diag["optimizer_message"] = str(res.message)
    return FitResult(
        model=family.name,  # type: ignore[arg-type]
        params=dict(zip(names, np.exp(res.x).tolist(), strict=True)),
        log_likelihood=float(ll_grad(res.x)[0]),
        customers_used=customers_used,
        converged=bool(np.isfinite(res.fun) and diag["newton_step_se"] < converge_tol_se),
        time_unit=time_unit,
        method="scipy_mle",
        as_of_date=None if as_of_date is None else _as_date(as_of_date),
        diagnostics=diag,
    )


#: scipy options for pymc's MAP search (L-BFGS-B). pymc minimises the *total* -logp, so the
#: default relative tolerance loosens with the number of customers: at 1 M simulated customers
#: it stopped 0.026 standard errors short of the maximum, ftol=1e-12 stops 1e-4 short for a
#: few more evaluations (benchmarks/bench_predictions.py).
MAP_OPTIONS: dict[str, Any] = {"maxiter": 5000, "ftol": 1e-12}
DEFAULT_MCMC_KWARGS: dict[str, Any] = {
    "draws": 1000,
    "tune": 1000,
    "chains": 2,
    "cores": 2,
    "random_seed": 42,
    "progressbar": False,
}


#: pytensor compiles the models' C code once and caches it on disk; a cold cache costs about
#: 35 s per fitting process, a warm one about 1 s (docs/benchmarks.md, "Start-up cost"). By
#: default the cache is in the home folder, which a container, a CI runner or a service user
#: without a home does not keep; this project keeps it beside the code instead, unless pytensor
#: is configured otherwise (``PYTENSOR_FLAGS`` with a compiledir, ``PYTENSORRC``, ~/.pytensorrc).
PYTENSOR_CACHE_DIR = PROJECT_DIR / ".cache" / "pytensor"


def use_project_compile_cache(
    environ: MutableMapping[str, str] | None = None,
    cache_dir: Path | None = None,
    modules: Mapping[str, Any] | None = None,
) -> Path | None:
    """Point pytensor's ``base_compiledir`` at :data:`PYTENSOR_CACHE_DIR` before pytensor is
    imported (it reads its flags once, at import). Returns the folder, or None when pytensor is
    already imported or configured, or the folder cannot be written (then pytensor's default
    applies). Results do not change: the cache holds compiled code, not numbers."""
    env = os.environ if environ is None else environ
    folder = PYTENSOR_CACHE_DIR if cache_dir is None else cache_dir
    flags = env.get("PYTENSOR_FLAGS", "")
    if (
        "pytensor" in (sys.modules if modules is None else modules)
        or "compiledir" in flags
        or env.get("PYTENSORRC")
        or (Path.home() / ".pytensorrc").exists()
        or any(c in str(folder) for c in ",= ")  # PYTENSOR_FLAGS cannot quote them
    ):
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(folder, os.W_OK):
        return None
    env["PYTENSOR_FLAGS"] = ",".join(part for part in (flags, f"base_compiledir={folder}") if part)
    return folder


def _flat_config(names: tuple[str, ...]) -> dict[str, Any]:
    """HalfFlat priors: the log posterior equals the log-likelihood, so MAP is the MLE.

    (pymc's find_MAP optimises without the log-transform Jacobian, so the flat prior stays flat
    on the original scale.)
    """
    use_project_compile_cache()
    from pymc_extras.prior import Prior

    return {k: Prior("HalfFlat") for k in names}


def _posterior_summary(
    model: Any, names: tuple[str, ...], method: str
) -> tuple[dict[str, float], dict[str, tuple[float, float]] | None, dict[str, Any]]:
    post = model.idata.posterior
    params = {k: float(post[k].mean()) for k in names}
    if method == "map":
        return params, None, {}
    import arviz as az

    intervals = {k: (float(post[k].quantile(0.03)), float(post[k].quantile(0.97))) for k in names}
    rhat = az.rhat(model.idata, var_names=list(names))
    diag: dict[str, Any] = {"r_hat": {k: float(rhat[k]) for k in names}}
    stats_ = getattr(model.idata, "sample_stats", None)
    if stats_ is not None and "diverging" in stats_:
        diag["divergences"] = int(stats_["diverging"].sum())
    return params, intervals, diag


def _run_pymc_fit(model: Any, frame: pd.DataFrame, method: str, mcmc_kwargs: Mapping | None):
    """Fit quietly; MAP gets tight tolerances, MCMC the defaults merged with the caller's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "map":
            model.fit(frame, method="map", progressbar=False, options=dict(MAP_OPTIONS))
        elif method == "mcmc":
            model.fit(frame, method="mcmc", **{**DEFAULT_MCMC_KWARGS, **(mcmc_kwargs or {})})
        else:
            raise ValueError(f"method must be 'map' or 'mcmc', got {method!r}")


def _converged(method: str, diag: Mapping[str, Any], tol_se: float) -> bool:
    if method == "mcmc":
        return max(diag["r_hat"].values()) < 1.05
    return bool(diag.get("newton_step_se", math.inf) < tol_se)


def _fit_with_pymc(
    model_name: str,
    model_cls: Any,
    param_names: tuple[str, ...],
    frame: pd.DataFrame,
    ll_grad: LikelihoodGradient,
    *,
    method: str,
    time_unit: str,
    as_of_date: date | str | None,
    mcmc_kwargs: Mapping[str, Any] | None,
    converge_tol_se: float,
) -> FitResult:
    """Fit one pymc-marketing model with flat priors and judge the fit with this module's own
    log-likelihood (``ll_grad`` maps log-parameters to (log-likelihood, gradient))."""
    model = model_cls(model_config=_flat_config(param_names))
    _run_pymc_fit(model, frame, method, mcmc_kwargs)
    params, intervals, diag = _posterior_summary(model, param_names, method)
    theta = np.array([params[k] for k in param_names])
    finite = bool(np.all(np.isfinite(theta)) and np.all(theta > 0))
    if finite:
        diag.update(_diagnostics(ll_grad, np.log(theta), param_names))
        ll = float(ll_grad(np.log(theta))[0])
    else:
        ll = math.nan
    return FitResult(
        model=model_name,
        params=params,
        log_likelihood=ll,
        customers_used=len(frame),
        converged=finite and _converged(method, diag, converge_tol_se),
        time_unit=time_unit,
        method=method,
        as_of_date=None if as_of_date is None else _as_date(as_of_date),
        diagnostics=diag,
        intervals=intervals,
        fitted_model=model,
    )


#: What an out-of-range parameter usually means, per (parameter, "low"/"high").
_PARAM_HINTS = {
    ("r", "low"): "r (shape of the purchase-rate distribution) near 0 means almost nobody buys "
    "again: too few repeat purchase days, or frequency counts orders of one day as one purchase "
    "and nobody has a second day",
    ("r", "high"): "a huge r means every customer buys at the same rate; check that frequency "
    "is not a constant",
    ("alpha", "low"): "alpha (scale of the purchase rate, in time units) is tiny; check the time "
    "unit (recency/T in days vs weeks) and that T is not near 0 for everyone",
    ("alpha", "high"): "alpha (scale of the purchase rate, in time units) is huge; check the "
    "time unit (recency/T in days vs weeks) and that repeat purchases exist",
    ("a", "low"): "a, b shape the dropout probability; an extreme a or b means the data show "
    "no sign of dropout (everyone's last purchase is recent) or no repeat buyers",
    ("a", "high"): "a, b shape the dropout probability; an extreme a or b means the data show "
    "no sign of dropout (everyone's last purchase is recent) or no repeat buyers",
    ("p", "low"): "p is the shape of each purchase day's spend; check the spend amounts",
    ("p", "high"): "p is the shape of each purchase day's spend; check the spend amounts",
    ("q", "low"): "q is the shape of the spend scale across customers; a small q means spend "
    "is very heavy-tailed across customers: check for absurd amounts",
    ("q", "high"): "q is the shape of the spend scale across customers; check the amounts",
    ("v", "low"): "v is the scale of spend; check the amounts' currency and units",
    ("v", "high"): "v is the scale of spend; check the amounts' currency and units",
}
_PARAM_HINTS[("b", "low")] = _PARAM_HINTS[("a", "low")]
_PARAM_HINTS[("b", "high")] = _PARAM_HINTS[("a", "high")]


def _param_hint(name: str, low: bool) -> str:
    return _PARAM_HINTS.get(
        (name, "low" if low else "high"), "check the input features for broken rows"
    )


def validate_fit(
    result: FitResult, bounds: Mapping[str, tuple[float, float]] | None = None
) -> FitResult:
    """Raise ``FitError`` unless the fit converged and every parameter is finite and sane.

    ``run_predictions`` uses the model only when this passes (otherwise its fallback, with the
    message as ``status_reason``), and the asset's blocking check repeats it on the models used
    for scoring. Bounds default to ``DEFAULT_BOUNDS`` (alpha's are in days and scale with the
    time unit). Returns the result unchanged so it can be chained.
    """
    limits = {**DEFAULT_BOUNDS, **(bounds or {})}
    scale = TIME_UNITS.get(result.time_unit, 1.0)
    what = f"{result.model} fit ({result.method}, {result.customers_used} customers)"
    for name, value in result.params.items():
        lo, hi = limits[name]
        if name == "alpha":
            lo, hi = lo / scale, hi / scale
        if not np.isfinite(value):
            raise FitError(
                f"{what}: parameter {name} is {value}; the optimizer failed. Check the input "
                "features for broken rows and re-run with method='mcmc' to inspect."
            )
        if name == "q" and value <= 1.0:
            raise FitError(
                f"{what}: q = {value:.4g} <= 1, so the population mean spend p*v/(q-1) is "
                "infinite: spend is too heavy-tailed across customers for Gamma-Gamma. Check "
                "for absurd amounts or a wrong currency conversion in the features."
            )
        if not lo <= value <= hi:
            raise FitError(
                f"{what}: parameter {name} = {value:.4g} is outside the sane range "
                f"[{lo:.4g}, {hi:.4g}]: {_param_hint(name, value < lo)}."
            )
    if not np.isfinite(result.log_likelihood):
        raise FitError(f"{what}: the log-likelihood at the fitted parameters is not finite.")
    if not result.converged:
        diag = result.diagnostics
        if result.method == "mcmc":
            detail = f"r-hat {diag.get('r_hat')} (need < 1.05); run more tune/draws"
        elif not diag.get("negative_definite", True):
            detail = (
                "the log-likelihood is flat or saddle-shaped at the solution, so some "
                "parameters are not identified by the data (too few repeat buyers, or no "
                "variation in recency)"
            )
        else:
            detail = (
                f"the optimizer stopped {diag.get('newton_step_se', math.nan):.3g} standard "
                "errors from the maximum (limit 0.05); check the features for outliers or "
                "re-run with method='mcmc'"
            )
        raise FitError(f"{what} did not converge: {detail}.")
    return result
