"""CW_DUCKDB_MEMORY_LIMIT and CW_DUCKDB_TEMP_DIR reach every DuckDB the warehouse opens: the
Dagster resource's connections and dbt's (profiles.yml), with the same values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from customer_warehouse.config import load_settings
from orchestration.defs.resources import WarehouseResource

from .conftest import PROJECT_DIR, dbt_env

SETTINGS_SQL = (
    "select current_setting('memory_limit') as memory_limit, "
    "current_setting('temp_directory') as temp_directory"
)
#: What DuckDB reports for CW_DUCKDB_MEMORY_LIMIT=1GB (1e9 bytes in binary units).
ONE_GB = "953.6 MiB"


@pytest.fixture
def limited(tmp_path, monkeypatch) -> dict[str, str]:
    values = {
        "CW_RAW_DIR": str(tmp_path),
        "CW_WAREHOUSE_PATH": str(tmp_path / "w.duckdb"),
        "CW_DUCKDB_MEMORY_LIMIT": "1GB",
        "CW_DUCKDB_TEMP_DIR": str(tmp_path / "spill"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def test_the_resources_connections_get_the_limit_and_the_temp_dir(limited):
    for read_only in (False, True):
        with WarehouseResource().connect(read_only=read_only) as con:
            assert con.execute(SETTINGS_SQL).fetchone() == (ONE_GB, limited["CW_DUCKDB_TEMP_DIR"])


def test_unset_means_duckdbs_defaults(tmp_path):
    settings = load_settings({"CW_RAW_DIR": str(tmp_path)})
    with duckdb.connect(str(tmp_path / "w.duckdb"), config=settings.duckdb_config) as con:
        memory, temp = con.execute(SETTINGS_SQL).fetchone()
    assert temp == str(tmp_path / "w.duckdb") + ".tmp"
    assert memory != ONE_GB


def test_dbt_gets_the_same_values_through_profiles_yml(limited, tmp_path):
    env = dbt_env(Path(limited["CW_WAREHOUSE_PATH"]), tmp_path / "dbt", Path(limited["CW_RAW_DIR"]))
    env.update({k: v for k, v in limited.items() if k.startswith("CW_DUCKDB_")})
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dbt"), "show", "--quiet", "--output", "json",
         "--inline", SETTINGS_SQL],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    rows = json.loads(out.stdout[out.stdout.index("{") :])["show"]
    assert rows == [{"memory_limit": ONE_GB, "temp_directory": limited["CW_DUCKDB_TEMP_DIR"]}]


SPILL_MODELS = {
    # Sorting 3M hashes needs more than 150 MB: the first model spills to the temp directory.
    "spills.sql": "select i, md5(cast(i as varchar)) as h from range(3000000) t(i) order by h",
    "after_a.sql": "select count(*) as n from {{ ref('spills') }}",
    "after_b.sql": "select max(h) as h from {{ ref('spills') }}",
}


def test_dbt_keeps_working_after_a_model_spilled_to_the_temp_dir(tmp_path):
    """The profile's DuckDB options are given once, when dbt opens the file. dbt-duckdb's
    `settings:` are SET again on every new cursor, and DuckDB refuses to switch temp_directory
    once it was used: with them, the models after a spilling one failed (10M-order bench)."""
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        "name: spill\nversion: '1.0'\nprofile: customer_warehouse\n"
        "models:\n  spill:\n    +materialized: table\n"
    )
    for name, sql in SPILL_MODELS.items():
        (project / "models" / name).write_text(sql)
    (project / "profiles.yml").write_text((PROJECT_DIR / "profiles.yml").read_text())
    env = dbt_env(tmp_path / "w.duckdb", tmp_path / "dbt", tmp_path)
    env.update(
        CW_DUCKDB_MEMORY_LIMIT="150MB",
        CW_DUCKDB_TEMP_DIR=str(tmp_path / "spill"),
        DBT_PROFILES_DIR=str(project),
    )
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dbt"), "run", "--threads", "2"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "PASS=3" in out.stdout
