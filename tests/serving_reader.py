"""A BI-like reader of the serving copy, run as its own process by tests/test_serving_readers.py.

    python tests/serving_reader.py SERVING_DIR STOP_FILE [PAUSE_SECONDS]

Until STOP_FILE exists it reads ``SERVING_DIR/current`` in a loop, as a dashboard would: open
``current/serving.duckdb`` read-only, read in that one connection the version id (table
``manifest.version``), the row count and checksum of ``marts.customer_tiers`` and
``marts.tier_summary`` and each dimension's customer total of ``tier_summary``; close; read
``versions/<id>/manifest.json``. A read is consistent when the counts and checksums equal that
manifest's, every ``tier_summary`` dimension adds up to the ``customer_tiers`` row count and the
manifest inside the file equals ``manifest.json``. Then it prints one JSON summary (reads,
versions seen with their customer counts, errors and lock errors with the first messages,
inconsistent reads with the first problems) and exits. It uses only duckdb and the
standard library: nothing of the project, like a BI tool.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import duckdb

CHECKSUM = "select count(*), coalesce(sum(hash(t)), 0) from {table} as t"


def _checksum(con: duckdb.DuckDBPyConnection, table: str) -> tuple[int, str]:
    rows, total = con.execute(CHECKSUM.format(table=table)).fetchone()
    return int(rows), f"{int(total) % 2**64:016x}"


def read_once(serving_dir: Path) -> dict:
    """One read of the current version; raises on any error."""
    con = duckdb.connect(str(serving_dir / "current" / "serving.duckdb"), read_only=True)
    try:
        version_id = con.execute("select version_id from manifest.version").fetchone()[0]
        inside = {
            name: (rows, checksum)
            for name, rows, checksum in con.execute(
                "select table_name, row_count, checksum from manifest.tables"
            ).fetchall()
        }
        tiers = _checksum(con, "marts.customer_tiers")
        summary = _checksum(con, "marts.tier_summary")
        totals = dict(
            con.execute(
                "select dimension, sum(customers) from marts.tier_summary group by 1"
            ).fetchall()
        )
    finally:
        con.close()
    manifest_path = serving_dir / "versions" / version_id / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    tables = manifest["tables"]
    expected = {name: (info["rows"], info["checksum"]) for name, info in tables.items()}
    problems = []
    if manifest["version"] != version_id:
        problems.append(f"manifest.json is of {manifest['version']}")
    if inside != expected:
        problems.append("the manifest inside the file differs from manifest.json")
    if tiers != expected["marts.customer_tiers"]:
        problems.append(f"customer_tiers {tiers} != manifest {expected['marts.customer_tiers']}")
    if summary != expected["marts.tier_summary"]:
        problems.append(f"tier_summary {summary} != manifest {expected['marts.tier_summary']}")
    wrong_totals = {d: int(n) for d, n in totals.items() if int(n) != tiers[0]}
    if not totals or wrong_totals:
        problems.append(f"tier_summary totals {wrong_totals or totals} != {tiers[0]} customers")
    return {"version": version_id, "customers": tiers[0], "problems": problems}


def main(argv: list[str]) -> int:
    serving_dir, stop_file = Path(argv[1]), Path(argv[2])
    pause = float(argv[3]) if len(argv) > 3 else 0.02
    summary = {
        "reads": 0,
        "versions": {},
        "errors": 0,
        "first_errors": [],
        "lock_errors": 0,
        "inconsistent_reads": 0,
        "inconsistent": [],
        "waits_before_first_version": 0,
    }
    print("ready", flush=True)
    while not stop_file.exists():
        if not (serving_dir / "current").exists():
            summary["waits_before_first_version"] += 1
            time.sleep(0.1)
            continue
        try:
            result = read_once(serving_dir)
        except Exception as exc:  # every error counts; the test expects none
            summary["errors"] += 1
            if len(summary["first_errors"]) < 20:
                summary["first_errors"].append(f"{type(exc).__name__}: {exc}")
            if "lock" in str(exc).lower():
                summary["lock_errors"] += 1
        else:
            summary["reads"] += 1
            summary["versions"][result["version"]] = result["customers"]
            if result["problems"] and len(summary["inconsistent"]) < 20:
                summary["inconsistent"].append(result)
            summary["inconsistent_reads"] += bool(result["problems"])
        time.sleep(pause)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
