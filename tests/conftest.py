"""Shared helpers: build a warehouse from a raw folder into a temporary DuckDB file.

dbt runs as a subprocess with its own target/log folders, so tests never touch `data/` or
`target/` and can run beside `make run`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from customer_warehouse import ingestion

# Fixtures shared by the modules of one family of tests live beside that family's helpers.
pytest_plugins = [
    "tests.demo_data_helpers",
    "tests.orchestration_helpers",
    "tests.prediction_helpers",
    "tests.serving_helpers",
]

PROJECT_DIR = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
DBT = str(Path(sys.executable).parent / "dbt")


@dataclass
class Warehouse:
    """A warehouse built for a test: its file, its raw folder and the dbt output."""

    path: Path
    raw_dir: Path
    work_dir: Path
    dbt_output: str = ""

    def connect(self) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(str(self.path), read_only=True)

    def query(self, sql: str, params=None) -> list[tuple]:
        with self.connect() as con:
            return con.execute(sql, params or []).fetchall()

    def scalar(self, sql: str, params=None):
        return self.query(sql, params)[0][0]

    def keyed(self, sql: str, params=None) -> dict:
        """The rows of `sql` by their first column, each the tuple of the other columns."""
        return {row[0]: row[1:] for row in self.query(sql, params)}


def dbt_env(warehouse_path: Path, work_dir: Path, raw_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CW_", "DBT_"))}
    env.update(
        CW_WAREHOUSE_PATH=str(warehouse_path),
        CW_RAW_DIR=str(raw_dir),
        DBT_PROFILES_DIR=str(PROJECT_DIR),
        DBT_TARGET_PATH=str(work_dir / "target"),
        DBT_LOG_PATH=str(work_dir / "logs"),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    env.update(extra)
    return env


def run_dbt(
    args: list[str],
    env: dict[str, str],
    *,
    check: bool = True,
    project: Path = PROJECT_DIR,
    command: str = DBT,
) -> subprocess.CompletedProcess:
    """``dbt ARGS`` (or another tool of the venv, such as MetricFlow's ``mf``) in ``project``
    (the project itself or a copy, tests/project_copy.py); a failure shows the output's tail."""
    proc = subprocess.run(
        [command, *args], cwd=project, env=env, capture_output=True, text=True, timeout=1800
    )
    if check and proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-60:])
        name = Path(command).name
        raise AssertionError(
            f"{name} {' '.join(args)} failed ({proc.returncode}):\n{tail}\n{proc.stderr[-2000:]}"
        )
    return proc


def build_warehouse(
    raw_dir: Path,
    work_dir: Path,
    *,
    select: str | None = None,
    as_of_date: str = "",
    check: bool = True,
    full: bool = True,
    exclude_unit_tests: bool = False,
    encodings: dict[str, str] | None = None,
) -> Warehouse:
    """Load `raw_dir` and run `dbt build` (seeds, models, tests; optionally a selection).

    ``exclude_unit_tests``: build as the Dagster job does (dbt unit tests test the SQL, not the
    data; other tests run them)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        ingestion.load_raw(con, raw_dir, log=lambda _line: None, encodings=encodings or {})
        ingestion.ensure_survey_tables(con)
    env = dbt_env(path, work_dir, raw_dir, CW_AS_OF_DATE=as_of_date)
    args = ["build", "--log-level-file", "warn"]
    if exclude_unit_tests:
        args += ["--exclude-resource-type", "unit_test"]
    if select:
        # only tests whose every parent is selected
        args += ["--select", select, "--indirect-selection", "cautious"]
    proc = run_dbt(args, env, check=check)
    return Warehouse(path=path, raw_dir=raw_dir, work_dir=work_dir, dbt_output=proc.stdout)


# Every raw source and the staging tables its rows are split into: accepted, rejected, and
# superseded by a later delivery of the same key (history, never a reject).
STAGING_SPLITS = (
    ("orders", "stg_shop__orders", "order_rejects", "superseded_orders"),
    ("customers", "stg_shop__customers", "customer_rejects", "superseded_customers"),
    ("order_items", "stg_shop__order_items", "order_item_rejects", "superseded_order_items"),
    ("products", "stg_shop__products", "product_rejects", "superseded_products"),
    ("redemptions", "stg_shop__redemptions", "redemption_rejects", "superseded_redemptions"),
    # Manual point adjustments: a small file read whole each run, nothing superseded.
    ("point_adjustments", "stg_shop__point_adjustments", "point_adjustment_rejects", None),
)

STAGING_SELECTION = "+staging +int_as_of_date"


def staging_split_counts(warehouse: Warehouse) -> Iterator[tuple[str, int, int, int, int]]:
    """Per raw source (STAGING_SPLITS): its raw rows and the rows accepted, rejected and
    superseded in staging (0 superseded where the source has no such table)."""
    for source, accepted, rejected, superseded in STAGING_SPLITS:
        raw = warehouse.scalar(f"select count(*) from raw.{source}")
        ok = warehouse.scalar(f"select count(*) from staging.{accepted}")
        bad = warehouse.scalar(f"select count(*) from staging.{rejected}")
        old = warehouse.scalar(f"select count(*) from staging.{superseded}") if superseded else 0
        yield source, raw, ok, bad, old


@pytest.fixture(scope="session")
def quarantine_warehouse(tmp_path_factory) -> Warehouse:
    """The hand-written quarantine fixture (every reject reason once) built through staging."""
    work = tmp_path_factory.mktemp("quarantine")
    raw = work / "raw"
    shutil.copytree(FIXTURES / "quarantine", raw)
    return build_warehouse(raw, work, select=STAGING_SELECTION)


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has ended (and been waited for)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
