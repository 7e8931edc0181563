"""The command line ``python -m customer_warehouse.demo`` (``cw-demo-data``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from customer_warehouse.demo.generate import generate
from customer_warehouse.demo.params import (
    DEFAULT_CUSTOMERS,
    DEFAULT_END,
    DEFAULT_SEED,
    DEFAULT_START,
    FORMATS,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: see the docstring of :mod:`customer_warehouse.demo`."""
    parser = argparse.ArgumentParser(
        prog="python -m customer_warehouse.demo",
        description="Write deterministic demo exports (orders, customers, order_items, products,"
        " redemptions, surveys) with their ground truth.",
    )
    parser.add_argument(
        "--out",
        required=True,
        dest="out_dir",
        help="output folder (its generated files are replaced)",
    )
    parser.add_argument("--customers", type=int, default=DEFAULT_CUSTOMERS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--format", choices=FORMATS, default="csv", dest="fmt")
    parser.add_argument(
        "--dirty-rate",
        type=float,
        default=0.0,
        help="extra bad rows as a fraction of orders (0 to 0.5)",
    )
    parser.add_argument("--start", default=DEFAULT_START, help="first day, YYYY-MM-DD")
    parser.add_argument("--end", default=DEFAULT_END, help="last day, YYYY-MM-DD")
    parser.add_argument("--no-items", action="store_false", dest="items", help="skip order_items")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    try:
        summary = generate(**vars(args))  # every option is named as generate()'s parameter
    except ValueError as exc:
        parser.error(str(exc))
    if not args.quiet:
        print(
            f"wrote {summary['customer_rows']:,} customers, {summary['order_rows']:,} orders, "
            f"{summary['order_items']:,} order lines, {summary['redemptions']:,} redemptions, "
            f"{summary['survey_responses']:,} survey responses to {summary['out_dir']} "
            f"in {summary['elapsed_seconds']:.1f} s"
        )
    return 0
