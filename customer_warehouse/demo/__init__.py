"""Deterministic demo exports with a known ground truth (``python -m customer_warehouse.demo``).

Reads: the demo's word lists and mixes in ``customer_warehouse/demo/data/`` and the dbt seeds
whose values the warehouse classifies by (``seeds/``: channels, statuses, currency rates,
adjustment reasons, NPS categories, need tags, provinces).
Writes: into one folder, the raw exports of ``docs/raw-data.md`` (``orders``, ``customers``,
``order_items``, ``products``, ``redemptions``, ``point_adjustments`` as CSV or Parquet, and
``surveys/``), and under ``truth/`` what the warehouse must find in them (simulation
parameters, per-customer latent values, the dirty rows and the over-redemptions). The same
arguments give byte-identical files; the files it writes (and their other-format twins) are
replaced, anything else in the folder is left alone.

Where to read on: ``simulation`` (the purchase process, the ground truth), ``dirty`` (the
defective rows), ``tables`` and ``engagement`` (the other files), ``generate`` (the order of the
stages), ``cli`` (the command line).
"""

from customer_warehouse.demo.cli import main
from customer_warehouse.demo.generate import generate
from customer_warehouse.demo.params import (
    ADJUSTMENT_COLUMNS,
    CUSTOMER_COLUMNS,
    DIRTY_CUSTOMER_REASONS,
    DIRTY_ORDER_REASONS,
    ITEM_COLUMNS,
    ORDER_COLUMNS,
    PRODUCT_COLUMNS,
    REDEMPTION_COLUMNS,
    SURVEY_COLUMNS,
    BgNbdParams,
    GammaGammaParams,
    Shares,
)
from customer_warehouse.demo.simulation import BgNbdDraw, simulate_bg_nbd
from customer_warehouse.demo.vocab import NEED_TAGS, PROVINCES

__all__ = [
    "ADJUSTMENT_COLUMNS",
    "CUSTOMER_COLUMNS",
    "DIRTY_CUSTOMER_REASONS",
    "DIRTY_ORDER_REASONS",
    "ITEM_COLUMNS",
    "NEED_TAGS",
    "ORDER_COLUMNS",
    "PRODUCT_COLUMNS",
    "PROVINCES",
    "REDEMPTION_COLUMNS",
    "SURVEY_COLUMNS",
    "BgNbdDraw",
    "BgNbdParams",
    "GammaGammaParams",
    "Shares",
    "generate",
    "main",
    "simulate_bg_nbd",
]
