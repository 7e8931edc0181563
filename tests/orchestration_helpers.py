"""Shared by the Dagster asset graph tests (tests/test_orchestration*.py): the module's tmp dbt
paths, the definitions and a demo raw folder as fixtures (a pytest plugin, see
tests/conftest.py), and readers of raw files and built warehouses."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from orchestration.defs import build_definitions

from .conftest import PROJECT_DIR
from .dagster_job import isolated_dbt_paths

DEMO_CUSTOMERS = 1000
DEMO_DIRTY_RATE = 0.01
LAYERS = {"raw", "seeds", "staging", "intermediate", "marts", "semantic", "reports", "exports",
          "serving", "privacy"}  # fmt: skip
PREDICTION_TABLES = ("marts.customer_predictions", "marts.clv_model_params")
SURVEY_UNIQUE_TEST = "unique_stg_surveys__responses_response_id"


def key(path: str) -> dg.AssetKey:
    return dg.AssetKey(path.split("/"))


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dbt_paths(tmp_path_factory) -> Iterator[Path]:
    """dbt's target and log folders for the whole module (every module using the graph asks
    for it: ``pytestmark = pytest.mark.usefixtures("dbt_paths")``)."""
    with isolated_dbt_paths(tmp_path_factory.mktemp("dagster_dbt")) as folder:
        yield folder


@pytest.fixture(scope="module")
def defs(dbt_paths) -> dg.Definitions:
    return build_definitions()


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "raw"
    subprocess.run(
        [sys.executable, "-m", "customer_warehouse.demo", "--out", str(out),
         "--customers", str(DEMO_CUSTOMERS), "--dirty-rate", str(DEMO_DIRTY_RATE), "--quiet"],
        cwd=PROJECT_DIR, check=True, timeout=600,
    )  # fmt: skip
    return out


def _csv_rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


def _survey_records(folder: Path) -> int:
    total = 0
    for path in folder.iterdir():
        if path.suffix == ".json":
            total += len(json.loads(path.read_text(encoding="utf-8")))
        elif path.suffix == ".csv":
            total += _csv_rows(path)
    return total


def personal_values_of(raw_dir: Path, customers: set[str] | None = None) -> set[str]:
    """E-mail addresses, phone numbers, full names and birth dates of the raw customers file
    (of ``customers`` only, when given), each only when no other customer shares it (a shared
    birth date in another customer's row is not a leak): what must never be published."""
    with (raw_dir / "customers.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    owners: dict[str, set[str]] = {}
    for row in rows:
        for column in ("email", "phone", "full_name", "birth_date"):
            if len(row[column] or "") >= 3:
                owners.setdefault(row[column], set()).add(row["customer_id"])
    return {
        value
        for value, ids in owners.items()
        if len(ids) == 1 and (customers is None or ids <= customers)
    }


# Columns that record when a run happened, not what it computed.
RUN_TIME_COLUMNS = {"computed_at", "ingested_at", "loaded_at", "verified_at"}


def content_fingerprints(warehouse: Path) -> dict[str, tuple]:
    """Row count and an order-independent hash of every table's content, per table."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = con.execute(
            "select table_schema || '.' || table_name from information_schema.tables "
            "where table_schema in ('raw', 'staging', 'intermediate', 'marts') "
            "and table_type = 'BASE TABLE' order by 1"
        ).fetchall()
        out = {}
        for (table,) in tables:
            columns = [c[0] for c in con.execute(f"describe {table}").fetchall()]
            kept = ", ".join(f'"{c}"' for c in columns if c not in RUN_TIME_COLUMNS)
            out[table] = tuple(
                con.execute(
                    f"select count(*), sum(hash(t)) from (select {kept} from {table}) as t"
                ).fetchall()[0]
            )
        return out
