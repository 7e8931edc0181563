"""Shared by the purchase-prediction tests (tests/test_prediction*.py): the true parameters of the
simulated population and, as fixtures (a pytest plugin, see tests/conftest.py), the population
itself and one pymc-marketing fit of each model.

pytensor compiles C code on first use; the fits are session-scoped so a test process compiles and
fits each model once (one BG/NBD and one Gamma-Gamma graph, reused by the scoring, the backtest
and the failed-fit tests through pytensor's on-disk cache)."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from customer_warehouse import predictions as P

TRUTH = {"r": 0.25, "alpha": 30.0, "a": 0.8, "b": 2.5}  # per day
GG_TRUTH = {"p": 6.0, "q": 4.0, "v": 15.0}
AS_OF = date(2024, 6, 30)
N_SIM = 20_000


@pytest.fixture(scope="session")
def sim() -> pd.DataFrame:
    return P.simulate_bg_nbd(N_SIM, TRUTH, max_T=730.0, gg_params=GG_TRUTH, seed=11)


@pytest.fixture(scope="session")
def bg_fit(sim) -> P.FitResult:
    return P.fit_bg_nbd(sim, as_of_date=AS_OF)


@pytest.fixture(scope="session")
def gg_fit(sim) -> P.FitResult:
    return P.fit_gamma_gamma(sim, as_of_date=AS_OF)


@pytest.fixture(scope="session")
def bg_mle(sim) -> P.FitResult:
    return P.fit_bg_nbd_mle(sim)


@pytest.fixture(scope="session")
def scorer(bg_fit, gg_fit) -> P.Scorer:
    return P.Scorer(as_of_date=AS_OF, bg_params=bg_fit.params, gg_params=gg_fit.params)
