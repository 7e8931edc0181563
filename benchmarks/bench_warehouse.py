"""Benchmark the whole warehouse at scale: demo data of N customers, then the Dagster job
`full_refresh` (raw load, surveys, dbt build, loyalty, predictions, backtest, report), exactly
what `make run` does. Prints the wall time of each Dagster step and of the whole run.

    .venv/bin/python benchmarks/bench_warehouse.py [--customers 1000000] [--work /tmp/bench-wh]

A script, not a test: timings depend on the machine (write them in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from customer_warehouse.demo_data import generate

PROJECT_DIR = Path(__file__).resolve().parents[1]
STEP_DONE = re.compile(r'Finished execution of step "([^"]+)" in ([0-9.]+)(ms|s|m)')


def _seconds(value: str, unit: str) -> float:
    return float(value) / 1000 if unit == "ms" else float(value) * (60 if unit == "m" else 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-warehouse"))
    args = parser.parse_args(argv)

    shutil.rmtree(args.work, ignore_errors=True)
    raw, home = args.work / "raw", args.work / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(PROJECT_DIR / "orchestration" / "dagster.yaml", home / "dagster.yaml")

    started = time.perf_counter()
    summary = generate(raw, customers=args.customers, fmt="parquet", dirty_rate=0.001)
    print(
        f"demo data: {summary.get('orders', '?'):,} orders in {time.perf_counter() - started:.0f}s",
        flush=True,
    )

    env = os.environ | {
        "CW_RAW_DIR": str(raw),
        "CW_WAREHOUSE_PATH": str(args.work / "warehouse.duckdb"),
        "CW_AS_OF_DATE": "",
        # The benchmark's data is generated: a throwaway pseudonym key (docs/privacy.md).
        "CW_PII_KEY": os.environ.get("CW_PII_KEY") or secrets.token_hex(32),
        "DAGSTER_HOME": str(home),
        "DBT_TARGET_PATH": str(args.work / "target"),
        "DBT_LOG_PATH": str(args.work / "logs"),
        "DBT_PROFILES_DIR": str(PROJECT_DIR),
    }
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster"),
            "job",
            "execute",
            "-m",
            "orchestration.definitions",
            "-j",
            "full_refresh",
        ],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    steps: list[tuple[str, float]] = []
    assert proc.stdout is not None
    with (args.work / "dagster.log").open("w") as log:
        for line in proc.stdout:
            log.write(line)
            match = STEP_DONE.search(line)
            if match:
                steps.append((match[1], _seconds(match[2], match[3])))
                print(f"  {match[1]:<40} {steps[-1][1]:8.1f}s", flush=True)
    total = time.perf_counter() - started
    print(
        f"full_refresh: {'ok' if proc.wait() == 0 else 'FAILED'} in {total:.0f}s "
        f"(log: {args.work / 'dagster.log'})"
    )
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
