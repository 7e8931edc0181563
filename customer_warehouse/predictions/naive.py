"""The fallback model ``naive_rate``: each customer's own purchase rate shrunk toward the average
customer, used when the BG/NBD is not fitted (package docstring, "Fallbacks").

Reads arrays of one batch of prepared features; writes no table. Rate lambda_i = (x_i + xbar) /
(T_i + Tbar) (a Gamma-Poisson posterior mean with one average customer's worth of prior),
P(alive) = exp(-lambda_i (T_i - t_x)), E[X(t)] = P(alive) lambda_i t, P(X(t)=0) = 1 - P(alive) +
P(alive) e^(-lambda_i t), median wait ln 2 / lambda_i. ``shrunk_mean_spend`` is the spend of both
fallbacks (``naive_rate`` and ``bg_nbd_mean_spend``): (x m + mbar) / (x + 1), mbar the
population mean repeat spend. No library has this model: it is this project's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from customer_warehouse.predictions.contract import _arr


@dataclass(frozen=True)
class NaiveRate:
    """The naive-rate model at the population statistics (means over all scored customers)."""

    mean_frequency: float = 0.0
    mean_T: float = 0.0

    @property
    def _mean_T(self) -> float:
        return self.mean_T if self.mean_T > 0 else 1.0

    def rate(self, x: np.ndarray, T: np.ndarray) -> np.ndarray:
        return (x + self.mean_frequency) / (T + self._mean_T)

    def p_alive(self, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> np.ndarray:
        return np.exp(-self.rate(x, T) * (T - tx))

    def expected_purchases(self, t: Any, x, T, p_alive: np.ndarray) -> np.ndarray:
        return p_alive * self.rate(x, T) * t

    def expected_purchases_new_customer(self, t: np.ndarray) -> np.ndarray:
        return self.mean_frequency / self._mean_T * t

    def p_no_purchase(self, t: Any, x, T, p_alive: np.ndarray) -> np.ndarray:
        return 1.0 - p_alive + p_alive * np.exp(-self.rate(x, T) * t)

    def median_wait(self, x: np.ndarray, T: np.ndarray) -> np.ndarray:
        lam = self.rate(x, T)
        return np.where(lam > 0, np.log(2.0) / np.where(lam > 0, lam, 1.0), np.inf)


def shrunk_mean_spend(frequency, monetary_value, population_mean: float) -> np.ndarray:
    """Fallback AOV when no Gamma-Gamma is fitted: (x m + mbar) / (x + 1)."""
    x, m = _arr(frequency), _arr(monetary_value)
    usable = (x > 0) & (m > 0)
    x_eff = np.where(usable, x, 0.0)
    return (x_eff * np.where(usable, m, 0.0) + population_mean) / (x_eff + 1.0)
