"""Configuration comes from the environment; bad values stop at once with a useful message."""

from __future__ import annotations

import subprocess
from datetime import date
from pathlib import Path

import pytest

from customer_warehouse.config import DEFAULT_WAREHOUSE_PATH, ConfigError, load_settings

PROJECT_DIR = Path(__file__).resolve().parents[1]


def test_explicit_settings_are_used(tmp_path):
    settings = load_settings(
        {
            "CW_RAW_DIR": str(tmp_path),
            "CW_WAREHOUSE_PATH": str(tmp_path / "w.duckdb"),
            "CW_AS_OF_DATE": "2025-06-30",
        }
    )
    assert settings.raw_dir == tmp_path.resolve()
    assert settings.warehouse_path == (tmp_path / "w.duckdb").resolve()
    assert settings.as_of_date == date(2025, 6, 30)


def test_defaults_when_unset(tmp_path):
    settings = load_settings({"CW_RAW_DIR": str(tmp_path)})
    assert settings.warehouse_path == DEFAULT_WAREHOUSE_PATH
    assert settings.as_of_date is None


@pytest.mark.parametrize("value", ["2025-13-01", "30/06/2025", "yesterday", "2025-02-30"])
def test_malformed_as_of_date_names_the_variable_and_the_fix(tmp_path, value):
    with pytest.raises(ConfigError) as err:
        load_settings({"CW_RAW_DIR": str(tmp_path), "CW_AS_OF_DATE": value})
    assert "CW_AS_OF_DATE" in str(err.value) and "YYYY-MM-DD" in str(err.value)


def test_missing_raw_dir_names_the_variable(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings({"CW_RAW_DIR": str(tmp_path / "nope")})
    assert "CW_RAW_DIR" in str(err.value) and "orders.csv" in str(err.value)


def test_warehouse_path_must_be_a_file_in_an_existing_folder(tmp_path):
    with pytest.raises(ConfigError, match="CW_WAREHOUSE_PATH"):
        load_settings({"CW_RAW_DIR": str(tmp_path), "CW_WAREHOUSE_PATH": str(tmp_path)})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(
            {
                "CW_RAW_DIR": str(tmp_path),
                "CW_WAREHOUSE_PATH": str(tmp_path / "missing" / "w.duckdb"),
            }
        )


def _make_config(env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run(
        ["make", "--no-print-directory", "-s", "config"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.strip().splitlines())


def test_makefile_lets_the_caller_win(tmp_path):
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("CW_")}
    defaults = _make_config(base)
    assert defaults["CW_RAW_DIR"] == str(PROJECT_DIR / "data" / "demo")
    assert defaults["CW_WAREHOUSE_PATH"] == str(PROJECT_DIR / "data" / "warehouse.duckdb")
    assert defaults["CW_SERVING_DIR"] == str(PROJECT_DIR / "data" / "serving")
    assert defaults["CW_SERVING_KEEP"] == "3"
    chosen = _make_config(
        base
        | {
            "CW_RAW_DIR": str(tmp_path),
            "CW_WAREHOUSE_PATH": "/tmp/x.duckdb",
            "CW_AS_OF_DATE": "2024-12-31",
        }
    )
    assert defaults["CW_RAW_ENCODING"] == "auto (unset)"
    assert defaults["CW_POOL_WAIT_TIMEOUT"] == "1800 (unset: default)"
    chosen = _make_config(
        base | {**chosen, "CW_RAW_ENCODING": "gb18030", "CW_POOL_WAIT_TIMEOUT": "600"}
    )
    assert chosen == {
        "CW_RAW_DIR": str(tmp_path),
        "CW_WAREHOUSE_PATH": "/tmp/x.duckdb",
        "CW_AS_OF_DATE": "2024-12-31",
        "CW_RAW_ENCODING": "gb18030",
        "CW_POOL_WAIT_TIMEOUT": "600",
        "CW_SERVING_DIR": "/tmp/serving",  # beside the warehouse file
        "CW_SERVING_KEEP": "3",
        "CW_MAX_RAW_AGE_HOURS": "36 (unset: default)",
        "CW_ALERT_LOG": "/tmp/alerts.jsonl",  # beside the warehouse file
        "CW_ALERT_WEBHOOK_URL": "(unset: log file only)",
        "CW_DUCKDB_MEMORY_LIMIT": "80% (unset: DuckDB default)",
        "CW_DUCKDB_TEMP_DIR": "/tmp/x.duckdb.tmp (unset: DuckDB default)",
    }
    chosen = _make_config(
        base
        | {
            "CW_WAREHOUSE_PATH": "/tmp/x.duckdb",
            "CW_MAX_RAW_AGE_HOURS": "48",
            "CW_ALERT_LOG": "/var/log/cw.jsonl",
            "CW_ALERT_WEBHOOK_URL": "https://hooks.example.com/x",
            "CW_DUCKDB_MEMORY_LIMIT": "8GB",
            "CW_DUCKDB_TEMP_DIR": "/scratch/duckdb",
        }
    )
    assert {k: v for k, v in chosen.items() if k.startswith(("CW_MAX", "CW_ALERT", "CW_DUCK"))} == {
        "CW_MAX_RAW_AGE_HOURS": "48",
        "CW_ALERT_LOG": "/var/log/cw.jsonl",
        "CW_ALERT_WEBHOOK_URL": "https://hooks.example.com/x",
        "CW_DUCKDB_MEMORY_LIMIT": "8GB",
        "CW_DUCKDB_TEMP_DIR": "/scratch/duckdb",
    }
