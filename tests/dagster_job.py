"""Running the real Dagster job in a test: tmp dbt paths, tmp warehouse, ephemeral instance.

``isolated_dbt_paths`` points dbt's target and log folders at a tmp folder and clears every
``CW_*`` variable (use it from a module-scoped fixture); ``run_job`` executes ``full_refresh``
(or a selection) in-process with the ``CW_*`` variables pointing at the test's raw folder and
warehouse, exactly as ``make run`` does with the real ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from .conftest import PROJECT_DIR

#: The pseudonym key of test runs (a real run must set its own CW_PII_KEY).
TEST_PII_KEY = "test-key-0123456789abcdef0123456789abcdef"


def point_settings_at(mp: pytest.MonkeyPatch, raw: Path, warehouse: Path) -> None:
    """Clear every ``CW_*`` variable, then point the raw folder and the warehouse file at the
    test's own, with the test pseudonym key."""
    for name in list(os.environ):
        if name.startswith("CW_"):
            mp.delenv(name)
    mp.setenv("CW_RAW_DIR", str(raw))
    mp.setenv("CW_WAREHOUSE_PATH", str(warehouse))
    mp.setenv("CW_PII_KEY", TEST_PII_KEY)


@contextmanager
def isolated_dbt_paths(folder: Path) -> Iterator[Path]:
    """dbt writes its manifest and per-run artifacts under ``folder``, never target/."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("CW_"):
                mp.delenv(name)
        mp.setenv("DBT_TARGET_PATH", str(folder / "target"))
        mp.setenv("DBT_LOG_PATH", str(folder / "logs"))
        mp.setenv("DBT_PROFILES_DIR", str(PROJECT_DIR))
        mp.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        mp.setenv("CW_PII_KEY", TEST_PII_KEY)
        yield folder


def run_job(
    defs: dg.Definitions,
    raw_dir: Path,
    warehouse: Path,
    *,
    selection: list[dg.AssetKey] | None = None,
    ops_config: dict | None = None,
    env: dict[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Job full_refresh (or a selection) in-process, the CW_* variables pointing at a tmp
    build: dbt and the Python assets read them at run time, as in production. The tier report
    and the CRM exports go next to the warehouse."""
    run_config = {
        "ops": {
            "reports__tier_report": {"config": {"out_path": str(warehouse.parent / "r.html")}},
            **(ops_config or {}),
        }
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CW_RAW_DIR", str(raw_dir))
        mp.setenv("CW_WAREHOUSE_PATH", str(warehouse))
        mp.setenv("CW_AS_OF_DATE", "")
        mp.setenv("CW_EXPORT_DIR", str(warehouse.parent / "exports"))
        for name, value in (env or {}).items():
            mp.setenv(name, value)
        with dg.DagsterInstance.ephemeral() as instance:
            if selection is None:
                job = defs.resolve_job_def("full_refresh")
                return job.execute_in_process(
                    instance=instance, raise_on_error=False, run_config=run_config
                )
            job = defs.resolve_implicit_global_asset_job_def()
            return job.execute_in_process(
                instance=instance,
                raise_on_error=False,
                asset_selection=selection,
                run_config={"ops": ops_config or {}},
            )


def table_fingerprints(warehouse: Path, tables) -> dict[str, tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {
            table: tuple(
                con.execute(f"select count(*), sum(hash(t)) from {table} as t").fetchall()[0]
            )
            for table in tables
        }


def materialized(result: dg.ExecuteInProcessResult) -> dict[dg.AssetKey, dict]:
    return {
        event.materialization.asset_key: event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }


def check_evaluations(result: dg.ExecuteInProcessResult) -> list:
    return [
        event.event_specific_data
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    ]


def step_failures(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {
        event.step_key: event.event_specific_data.error.message
        for event in result.all_events
        if event.event_type_value == "STEP_FAILURE"
    }
