"""Purchase predictions: absurd or unconverged fits are rejected, unfittable data and contract
violations are explained (tolerances: tests/test_predictions.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from customer_warehouse import predictions as P

from .prediction_helpers import AS_OF, GG_TRUTH, TRUTH

# ------------------------------------------------------------------------------------------
# Validation and failed fits
# ------------------------------------------------------------------------------------------


def _fake_fit(model: str, params: dict[str, float], converged: bool = True, **kw) -> P.FitResult:
    return P.FitResult(
        model=model,
        params=params,
        log_likelihood=-1.0,
        customers_used=1000,
        converged=converged,
        time_unit="day",
        method="map",
        **kw,
    )


@pytest.mark.parametrize(
    ("model", "params", "needle"),
    [
        ("bg_nbd", {**TRUTH, "r": 1e-7}, "parameter r"),
        ("bg_nbd", {**TRUTH, "alpha": 1e9}, "parameter alpha"),
        ("bg_nbd", {**TRUTH, "b": float("nan")}, "parameter b is nan"),
        ("gamma_gamma", {**GG_TRUTH, "q": 0.9}, "q = 0.9 <= 1"),
        ("gamma_gamma", {**GG_TRUTH, "v": float("inf")}, "parameter v is inf"),
    ],
)
def test_validate_fit_rejects_absurd_parameters(model, params, needle):
    with pytest.raises(P.FitError, match=needle):
        P.validate_fit(_fake_fit(model, params))


def test_validate_fit_rejects_non_convergence_and_passes_good_fits(bg_fit):
    stopped = _fake_fit("bg_nbd", TRUTH, converged=False, diagnostics={"newton_step_se": 3.2})
    with pytest.raises(P.FitError, match="did not converge.*3.2 standard errors"):
        P.validate_fit(stopped)
    flat = _fake_fit("bg_nbd", TRUTH, converged=False, diagnostics={"negative_definite": False})
    with pytest.raises(P.FitError, match="not identified"):
        P.validate_fit(flat)
    assert P.validate_fit(bg_fit) is bg_fit
    # alpha's bounds follow the time unit: 10 000 days is sane, 10 000 weeks is not.
    weekly = P.FitResult(
        model="bg_nbd",
        params={**TRUTH, "alpha": 10_000.0},
        log_likelihood=-1.0,
        customers_used=1,
        converged=True,
        time_unit="week",
        method="map",
    )
    with pytest.raises(P.FitError, match="alpha"):
        P.validate_fit(weekly)


def test_unfittable_data_raises_fit_error_with_a_reason():
    """Only one-time buyers: r collapses to 0 and a, b are unidentified -> FitError."""
    rng = np.random.default_rng(0)
    n = 400
    only_once = pd.DataFrame(
        {
            "customer_id": np.arange(n),
            "frequency": 0.0,
            "recency": 0.0,
            "T": rng.uniform(0, 700, n).round(),
            "monetary_value": 0.0,
        }
    )
    fit = P.fit_bg_nbd(only_once)
    assert not fit.converged
    with pytest.raises(P.FitError, match=r"parameter r .* nobody buys again"):
        P.validate_fit(fit)
    # run_predictions routes such data to the documented fallback before fitting, and says so
    # in clv_model_params (one status row per model, no parameter values).
    run = P.run_predictions(only_once, AS_OF)
    assert (run.predictions["prediction_method"] == "naive_rate").all()
    assert run.params["fit_status"].tolist() == ["not_attempted", "not_attempted"]
    assert run.params["value"].isna().all()
    assert "nobody has bought on a second day" in run.params["status_reason"].iloc[0]


def test_heavy_tailed_spend_fails_gamma_gamma_check():
    heavy = P.simulate_bg_nbd(3000, TRUTH, gg_params={"p": 3.0, "q": 0.7, "v": 15.0}, seed=2)
    fit = P.fit_gamma_gamma_mle(heavy)
    assert fit.params["q"] < 1
    with pytest.raises(P.FitError, match="infinite"):
        P.validate_fit(fit)


def test_input_contract_violations_are_explained():
    good = pd.DataFrame(
        {
            "customer_id": [1, 2],
            "frequency": [0, 2],
            "recency": [0, 30],
            "T": [10, 60],
            "monetary_value": [0, 12.5],
        }
    )
    assert len(P.prepare_features(good)) == 2
    with pytest.raises(ValueError, match=r"recency > T.*customer_id \[2\]"):
        P.prepare_features(good.assign(recency=[0, 90]))
    with pytest.raises(ValueError, match="duplicates"):
        P.prepare_features(good.assign(customer_id=[1, 1]))
    with pytest.raises(ValueError, match="lack columns"):
        P.prepare_features(good.drop(columns="T"))
    with pytest.raises(ValueError, match="time_unit"):
        P.prepare_features(good, time_unit="month")  # type: ignore[arg-type]
    week = P.prepare_features(good, time_unit="week")
    assert week["T"].tolist() == pytest.approx([10 / 7, 60 / 7])
