"""Benchmark the loyalty ledger on a warehouse built at scale: the full ledger (everything up to
the day before the as-of date, in one window), then the daily increment (the as-of date alone),
then a rerun of that day (nothing to post).

    .venv/bin/python benchmarks/bench_warehouse.py --customers 1000000   # builds the warehouse
    .venv/bin/python benchmarks/bench_loyalty.py [--warehouse /tmp/bench-warehouse/warehouse.duckdb]

The warehouse is copied first (the copy is removed at the end), so the built one stays as it
is. Prints wall seconds per phase, the process CPU seconds (DuckDB's threads included) and the
machine's load average, which is what the wall figure depends on: write all of them into
docs/benchmarks.md. A script, not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

import duckdb

from customer_warehouse import loyalty
from customer_warehouse.warehouse import read_as_of_date


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _step(label: str, action) -> loyalty.LoyaltyReport:
    load = os.getloadavg()[0]
    started, cpu = time.perf_counter(), _cpu()
    report = action()
    wall, used = time.perf_counter() - started, _cpu() - cpu
    phases = ", ".join(f"{name} {seconds:.1f}" for name, seconds in report.seconds.items())
    print(
        f"{label:<28} wall {wall:6.1f} s  cpu {used:6.1f} s  load {load:4.1f}  "
        f"entries {report.entries_posted:>11,}  days {report.days_posted:>5}  "
        f"passes {report.settle_passes}\n{'':<28} ({phases})",
        flush=True,
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--warehouse", type=Path, default=Path("/tmp/bench-warehouse/warehouse.duckdb")
    )
    parser.add_argument("--work", type=Path, default=None, help="copy to use (default: beside it)")
    args = parser.parse_args(argv)
    if not args.warehouse.is_file():
        print(f"{args.warehouse} does not exist: run benchmarks/bench_warehouse.py first.")
        return 2
    work = args.work or args.warehouse.with_name("loyalty-bench.duckdb")
    shutil.copy(args.warehouse, work)
    try:
        with duckdb.connect(str(work)) as con:
            as_of = read_as_of_date(con)
            orders = con.execute(f"select count(*) from {loyalty.ORDERS_TABLE}").fetchone()[0]
            customers = con.execute(
                f"select count(distinct customer_id) from {loyalty.ORDERS_TABLE}"
            ).fetchone()[0]
            print(f"{work}: {customers:,} buyers, {orders:,} orders, as of {as_of}", flush=True)
            _step(
                "full ledger (to as-of - 1)",
                lambda: loyalty.rebuild_ledger(con, as_of - timedelta(days=1)),
            )
            _step("daily increment (as-of)", lambda: loyalty.post_ledger(con, as_of))
            _step("rerun of the same day", lambda: loyalty.post_ledger(con, as_of))
            rows = con.execute(f"select count(*) from {loyalty.LEDGER_TABLE}").fetchone()[0]
            print(f"ledger rows: {rows:,}")
    finally:
        work.unlink(missing_ok=True)
        Path(f"{work}.wal").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
