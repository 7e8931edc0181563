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


# --------------------------------------------------------------------------------------------
# Freshness, alerts and DuckDB resources
# --------------------------------------------------------------------------------------------


def _settings(tmp_path, **values):
    return load_settings({"CW_RAW_DIR": str(tmp_path), **values})


def test_freshness_alert_and_duckdb_defaults(tmp_path):
    settings = _settings(tmp_path, CW_WAREHOUSE_PATH=str(tmp_path / "w.duckdb"))
    assert settings.max_raw_age_hours == 36.0
    assert settings.alert_log_path == tmp_path.resolve() / "alerts.jsonl"
    assert settings.alert_webhook_url is None
    assert settings.duckdb_config == {}  # DuckDB's own defaults, as in profiles.yml
    assert settings.dbt_env["CW_DUCKDB_MEMORY_LIMIT"] == ""
    assert settings.dbt_env["CW_DUCKDB_TEMP_DIR"] == ""


def test_freshness_alert_and_duckdb_values_are_used(tmp_path):
    settings = _settings(
        tmp_path,
        CW_MAX_RAW_AGE_HOURS="48.5",
        CW_ALERT_LOG=str(tmp_path / "a.jsonl"),
        CW_ALERT_WEBHOOK_URL="https://hooks.example.com/services/T0/B0/x?y=1",
        CW_DUCKDB_MEMORY_LIMIT="1.5GiB",
        CW_DUCKDB_TEMP_DIR=str(tmp_path / "spill"),
    )
    assert settings.max_raw_age_hours == 48.5
    assert settings.alert_log_path == (tmp_path / "a.jsonl").resolve()
    assert settings.alert_webhook_url == "https://hooks.example.com/services/T0/B0/x?y=1"
    assert settings.duckdb_config == {
        "memory_limit": "1.5GiB",
        "temp_directory": str((tmp_path / "spill").resolve()),
    }
    assert settings.dbt_env["CW_DUCKDB_MEMORY_LIMIT"] == "1.5GiB"
    assert settings.dbt_env["CW_DUCKDB_TEMP_DIR"] == str((tmp_path / "spill").resolve())


# (variable, the fix its error names) -> bad values of it.
BAD_VALUES = {
    ("CW_MAX_RAW_AGE_HOURS", "CW_MAX_RAW_AGE_HOURS=36"): ["0", "a day", "nan"],
    ("CW_ALERT_WEBHOOK_URL", "https://"): [
        "hooks.example.com/x",
        "ftp://hooks.example.com/x",
        "http:///path-only",
        "http://host/a b",
    ],
    ("CW_DUCKDB_MEMORY_LIMIT", "CW_DUCKDB_MEMORY_LIMIT=8GB"): ["8", "lots", "150%", "0GB"],
}


@pytest.mark.parametrize(
    ("variable", "value", "fix"),
    [(variable, value, fix) for (variable, fix), values in BAD_VALUES.items() for value in values],
)
def test_bad_freshness_alert_and_duckdb_values_name_the_variable_and_the_fix(
    tmp_path, variable, value, fix
):
    with pytest.raises(ConfigError) as err:
        _settings(tmp_path, **{variable: value})
    assert str(err.value).startswith(f"{variable}={value!r}") and fix in str(err.value)


def test_alert_log_and_temp_dir_must_be_usable_paths(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match="CW_ALERT_LOG=.* is a folder"):
        _settings(tmp_path, CW_ALERT_LOG=str(tmp_path))
    with pytest.raises(ConfigError, match="CW_ALERT_LOG=.*does not exist"):
        _settings(tmp_path, CW_ALERT_LOG=str(tmp_path / "missing" / "a.jsonl"))
    with pytest.raises(ConfigError, match="CW_DUCKDB_TEMP_DIR=.* is a file"):
        _settings(tmp_path, CW_DUCKDB_TEMP_DIR=str(tmp_path / "a-file"))
