"""Values from the environment never become code: every CW_* variable with quotes, semicolons,
command substitutions and SQL fragments is either refused with the variable named, or used as
plain data (a path with quotes in it loads, builds and keeps every table).

Where a value could reach code: the Makefile's recipes (shell), the raw loader's file readers
(DuckDB SQL text), dbt's profile and vars (Jinja, SQL), the pseudonym key (bytes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from customer_warehouse import config, ingestion, privacy
from customer_warehouse.config import ConfigError, load_settings

from .conftest import FIXTURES, PROJECT_DIR, STAGING_SELECTION, build_warehouse

MARKER = Path("/tmp/cw-hostile-marker")
HOSTILE = [
    "x'; drop table raw.orders; --",
    'x"; select 1; --',
    f"$(touch {MARKER})",
    f"`touch {MARKER}`",
    "a;b|c&d",
    "../../etc/passwd",
    "2025-01-01'; drop schema marts cascade; --",
]
#: Every CW_* variable the warehouse reads, with whether a hostile value must be refused.
VARIABLES = {
    "CW_RAW_DIR": "path",
    "CW_WAREHOUSE_PATH": "path",
    "CW_AS_OF_DATE": "refused",
    "CW_RAW_ENCODING": "refused",
    "CW_RAW_ENCODING_ORDERS": "refused",
    "CW_EXPORT_DIR": "path",
    "CW_PII_KEY": "key",
    "CW_DBT_TARGET": "refused",
    "CW_SPARK_DEFAULT_SCHEMA": "refused",
    "CW_SERVING_DIR": "path",
    "CW_SERVING_KEEP": "refused",
    "CW_POOL_WAIT_TIMEOUT": "refused",
    "CW_MAX_RAW_AGE_HOURS": "refused",
    "CW_ALERT_LOG": "path",
    "CW_ALERT_WEBHOOK_URL": "refused",
    "CW_DUCKDB_MEMORY_LIMIT": "refused",
    "CW_DUCKDB_TEMP_DIR": "path",
}
SETTING_OF = {"CW_RAW_DIR": "raw_dir", "CW_WAREHOUSE_PATH": "warehouse_path",
              "CW_EXPORT_DIR": "export_dir", "CW_SERVING_DIR": "serving_dir",
              "CW_ALERT_LOG": "alert_log", "CW_DUCKDB_TEMP_DIR": "duckdb_temp_dir"}  # fmt: skip


def _clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CW_")}
    return env | values


@pytest.fixture(autouse=True)
def no_marker():
    MARKER.unlink(missing_ok=True)
    yield
    assert not MARKER.exists(), "a hostile value was executed as a command"


@pytest.mark.parametrize("value", HOSTILE)
def test_make_prints_hostile_values_as_data(value, tmp_path):
    env = _clean_env(**dict.fromkeys(["CW_RAW_DIR", "CW_WAREHOUSE_PATH", "CW_AS_OF_DATE"], value))
    out = subprocess.run(
        ["make", "--no-print-directory", "-s", "config"],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    for name in ("CW_RAW_DIR", "CW_WAREHOUSE_PATH", "CW_AS_OF_DATE"):
        assert f"{name}={value}\n" in out


@pytest.mark.parametrize("variable", sorted(VARIABLES))
@pytest.mark.parametrize("value", HOSTILE)
def test_every_setting_refuses_or_keeps_a_hostile_value_as_data(variable, value, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    env = {"CW_RAW_DIR": str(raw), "CW_WAREHOUSE_PATH": str(tmp_path / "w.duckdb"), variable: value}
    rule = VARIABLES[variable]
    if rule == "refused":
        with pytest.raises(ConfigError) as err:
            load_settings(env)
        assert variable in str(err.value)
    elif rule == "path":
        # A path is a path: refused with the variable named (no such folder, a file where a
        # folder belongs), or taken exactly as that path, never as anything else.
        try:
            settings = load_settings(env)
        except ConfigError as err:
            assert variable in str(err)
        else:
            assert getattr(settings, SETTING_OF[variable]) == Path(value).expanduser().resolve()
    else:  # the key: any text of 32+ characters is a key, used as bytes, never as text in SQL
        long_value = (value * 8)[:64]
        key, source = privacy.pii_key(raw, {variable: long_value})
        assert key == long_value.encode() and source == variable


def test_paths_with_quotes_and_semicolons_load_and_build(tmp_path):
    """A raw folder and a warehouse file whose names are SQL and shell fragments: the loader
    and dbt use them as paths, and every table is there afterwards."""
    folder = tmp_path / HOSTILE[0] / HOSTILE[1].replace("/", "_")
    raw = folder / "raw"
    shutil.copytree(FIXTURES / "quarantine", raw)
    work = folder / "work'; --"
    warehouse = build_warehouse(raw, work, select=STAGING_SELECTION)
    assert warehouse.scalar("select count(*) from raw.orders") > 10
    assert warehouse.scalar("select count(*) from staging.order_rejects") > 5
    with duckdb.connect(str(warehouse.path), read_only=True) as con:
        tables = con.execute("select table_name from information_schema.tables").fetchall()
    names = {row[0] for row in tables}  # tables and views (stg_* and *_rejects are views)
    assert {"orders", "stg_shop__orders", "order_rejects"} <= names


@pytest.mark.parametrize("value", ["2025-01-01'; drop schema marts cascade; --", "1 or 1=1"])
def test_dbt_refuses_a_hostile_as_of_date_before_building(value, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(FIXTURES / "minimal", raw)
    proc = build_warehouse(raw, tmp_path / "work", select=STAGING_SELECTION, as_of_date=value,
                           check=False)  # fmt: skip
    assert "CW_AS_OF_DATE" in proc.dbt_output and "is not a date" in proc.dbt_output


def test_every_cw_variable_in_the_code_is_covered():
    """A new CW_* setting must be added here, with its rule."""
    import re

    found = set()
    for folder in ("customer_warehouse", "orchestration"):
        for path in (PROJECT_DIR / folder).rglob("*.py"):
            found |= set(re.findall(r"\"(CW_[A-Z_]+)\"", path.read_text()))
    found |= set(re.findall(r"env_var\('(CW_[A-Z_]+)'", (PROJECT_DIR / "profiles.yml").read_text()))
    found.discard(config.ENCODING_VARIABLE + "_")  # prefix of the per-file variables
    assert found <= set(VARIABLES), sorted(found - set(VARIABLES))
    assert ingestion  # the loader reads paths through files.sql_path; covered by the build test
