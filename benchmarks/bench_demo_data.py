"""Benchmark the demo-data generator: wall time, orders per second and peak memory.

Why: the generator must produce ~10 M orders (1 M customers, Parquet) in well under a minute
on a 2-core machine with bounded memory, so that scale tests of the warehouse are cheap to
set up. This is a script, not a test: timings depend on the machine.

    .venv/bin/python benchmarks/bench_demo_data.py [--customers 1000000] [--format parquet]
        [--out /tmp/bench-demo-data] [--dirty-rate 0.0] [--no-items] [--keep]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from customer_warehouse.demo import generate


def _peak_rss_gb() -> float:
    """Peak resident memory of this process (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _folder_size_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1024**2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--format", choices=("csv", "parquet"), default="parquet")
    parser.add_argument("--dirty-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-items", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: a temporary folder)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args(argv)

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-demo-data-"))
    baseline = _peak_rss_gb()
    started = time.perf_counter()
    summary = generate(
        out,
        customers=args.customers,
        seed=args.seed,
        fmt=args.format,
        dirty_rate=args.dirty_rate,
        items=not args.no_items,
        quiet=False,
    )
    seconds = time.perf_counter() - started
    peak = _peak_rss_gb()
    orders = summary["order_rows"]
    print(
        f"customers={args.customers:,} format={args.format} items={not args.no_items} "
        f"dirty_rate={args.dirty_rate}\n"
        f"orders={orders:,} order_items={summary['order_items']:,} "
        f"redemptions={summary['redemptions']:,} survey_responses={summary['survey_responses']:,}\n"
        f"wall={seconds:.1f} s  orders/s={orders / seconds:,.0f}  "
        f"peak_rss={peak:.2f} GB (at start {baseline:.2f} GB)  "
        f"output={_folder_size_mb(out):,.0f} MB in {out}"
    )
    if not args.keep and args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
