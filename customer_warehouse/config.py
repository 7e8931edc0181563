"""Settings from the environment, checked once, with errors that say what to do.

| variable            | default                                   |
|---------------------|-------------------------------------------|
| CW_RAW_DIR          | <project>/data/demo (demo data)           |
| CW_WAREHOUSE_PATH   | <project>/data/warehouse.duckdb           |
| CW_AS_OF_DATE       | unset: the last accepted order date       |

A variable set by the caller always wins over the default. An invalid value raises
`ConfigError` naming the variable and the fix, before anything is read or written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_RAW_DIR = PROJECT_DIR / "data" / "demo"
DEFAULT_WAREHOUSE_PATH = PROJECT_DIR / "data" / "warehouse.duckdb"


class ConfigError(ValueError):
    """A setting is invalid; the message names the variable and how to fix it."""


@dataclass(frozen=True)
class Settings:
    raw_dir: Path
    warehouse_path: Path
    as_of_date: date | None
    project_dir: Path = PROJECT_DIR

    @property
    def dbt_env(self) -> dict[str, str]:
        """Environment for a dbt subprocess that sees exactly these settings."""
        env = {"CW_RAW_DIR": str(self.raw_dir), "CW_WAREHOUSE_PATH": str(self.warehouse_path)}
        env["CW_AS_OF_DATE"] = self.as_of_date.isoformat() if self.as_of_date else ""
        return env


def parse_as_of_date(value: str | None) -> date | None:
    """'' or None means "not set"; anything else must be an ISO date."""
    if value is None or value.strip() == "":
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(
            f"CW_AS_OF_DATE={value!r} is not a date. Set it as YYYY-MM-DD "
            "(for example CW_AS_OF_DATE=2025-06-30), or unset it to compute the warehouse "
            "as of the last order date in the data."
        ) from None


def load_settings(
    environ: Mapping[str, str] | None = None, *, require_raw_dir: bool = True
) -> Settings:
    """Read and check the CW_* variables.

    `require_raw_dir=False` lets commands that create the folder (the demo generator) run
    before it exists.
    """
    env = os.environ if environ is None else environ
    raw_value = env.get("CW_RAW_DIR", "").strip()
    raw_dir = Path(raw_value).expanduser().resolve() if raw_value else DEFAULT_RAW_DIR
    if require_raw_dir and not raw_dir.is_dir():
        if raw_value:
            raise ConfigError(
                f"CW_RAW_DIR={raw_value!r} is not a folder. Point it at the folder that holds "
                "orders.csv or orders.parquet (see docs/raw-data.md), or unset it to use the "
                "demo data (make demo-data)."
            )
        raise ConfigError(
            f"No raw data: the default CW_RAW_DIR ({raw_dir}) does not exist. Run "
            "`make demo-data` to generate demo data, or set CW_RAW_DIR to your exports."
        )

    wh_value = env.get("CW_WAREHOUSE_PATH", "").strip()
    warehouse_path = Path(wh_value).expanduser().resolve() if wh_value else DEFAULT_WAREHOUSE_PATH
    if warehouse_path.is_dir():
        raise ConfigError(
            f"CW_WAREHOUSE_PATH={wh_value!r} is a folder; it must be the path of a DuckDB "
            "file, for example data/warehouse.duckdb."
        )
    if wh_value and not warehouse_path.parent.is_dir():
        raise ConfigError(
            f"CW_WAREHOUSE_PATH={wh_value!r}: the folder {warehouse_path.parent} does not "
            "exist. Create it, or unset CW_WAREHOUSE_PATH to use data/warehouse.duckdb."
        )

    return Settings(
        raw_dir=raw_dir,
        warehouse_path=warehouse_path,
        as_of_date=parse_as_of_date(env.get("CW_AS_OF_DATE")),
    )
