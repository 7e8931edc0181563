"""``python -m orchestration.recovery``: clean up the dead runs of $DAGSTER_HOME once (``make
dev`` runs it before the daemon starts); with ``--set-aside-warehouse`` also move a damaged
warehouse file aside (``make rebuild``).
"""

from __future__ import annotations

import argparse
import fcntl
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from customer_warehouse.config import ConfigError, load_settings
from orchestration.recovery.dead_runs import clean_up_dead_runs

# --- a damaged warehouse file --------------------------------------------------------------


class WarehouseInUse(RuntimeError):
    """Another process has the warehouse file open; it must not be moved under it."""


def set_aside_warehouse(path: Path, *, now: datetime | None = None) -> list[Path]:
    """Rename the warehouse file (and its write-ahead log) to ``<name>.corrupt-<UTC time>``,
    so the next run builds a new one from the raw files. Nothing is deleted.

    Refuses (:class:`WarehouseInUse`) while another process holds DuckDB's lock on the file:
    a run writing it would go on writing the renamed file. Returns the new paths (none when
    there was no file).
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    if path.exists():
        with path.open("rb+") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise WarehouseInUse(
                    f"{path} is open in another process (a run, a DuckDB shell, a BI tool "
                    "reading it directly): close it or let the run finish, then rebuild."
                ) from None
            fcntl.lockf(handle, fcntl.LOCK_UN)
    moved = []
    for source in (path, path.with_name(path.name + ".wal")):
        if source.exists():
            target = source.with_name(f"{source.name}.corrupt-{stamp}")
            source.rename(target)
            moved.append(target)
    return moved


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m orchestration.recovery``: clean up the dead runs of $DAGSTER_HOME now;
    with ``--set-aside-warehouse`` move the warehouse file aside first (``make rebuild``)."""
    parser = argparse.ArgumentParser(prog="python -m orchestration.recovery")
    parser.add_argument(
        "--set-aside-warehouse",
        action="store_true",
        help="rename CW_WAREHOUSE_PATH (and its .wal) to <name>.corrupt-<UTC time>",
    )
    args = parser.parse_args(argv)
    with dg.DagsterInstance.get() as instance:
        messages = clean_up_dead_runs(instance)
    for message in messages:
        print(message)
    if not messages:
        print("No dead runs to clean up.")
    if args.set_aside_warehouse:
        try:
            path = load_settings(require_raw_dir=False).warehouse_path
            moved = set_aside_warehouse(path)
        except (ConfigError, WarehouseInUse) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for target in moved:
            print(f"Moved {target.name.split('.corrupt-')[0]} aside to {target} (kept).")
        if not moved:
            print(f"No warehouse file at {path}: the run builds it from the raw files.")
    return 0
