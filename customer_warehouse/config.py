"""Settings from the environment, checked once, with errors that say what to do.

| variable                 | default                                             |
|--------------------------|-----------------------------------------------------|
| CW_RAW_DIR               | <project>/data/demo (demo data)                     |
| CW_WAREHOUSE_PATH        | <project>/data/warehouse.duckdb                     |
| CW_AS_OF_DATE            | unset: the last accepted order date                 |
| CW_RAW_ENCODING          | auto: UTF-8, UTF-16 with BOM or GB18030, per file   |
| CW_RAW_ENCODING_<SOURCE> | CW_RAW_ENCODING, for one raw file (e.g. ..._ORDERS) |
| CW_EXPORT_DIR            | exports/ beside the warehouse file (data/exports)   |
| CW_PII_KEY               | demo data only: a generated key (privacy.pii_key)   |
| CW_SERVING_DIR           | serving/ beside the warehouse file (data/serving)   |
| CW_SERVING_KEEP          | 3 versions of the serving copy                      |
| CW_POOL_WAIT_TIMEOUT     | 1800: seconds a step waits for the writer pool      |
| CW_MAX_RAW_AGE_HOURS     | 36: newest raw delivery older than this warns       |
| CW_ALERT_LOG             | alerts.jsonl beside the warehouse file              |
| CW_ALERT_WEBHOOK_URL     | unset: failed runs are only written to the log      |
| CW_DUCKDB_MEMORY_LIMIT   | unset: DuckDB's own (80 % of RAM), per process      |
| CW_DUCKDB_TEMP_DIR       | unset: DuckDB's own (<warehouse file>.tmp)          |

A variable set by the caller always wins over the default. An invalid value raises
`ConfigError` naming the variable and the fix, before anything is read or written.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_RAW_DIR = PROJECT_DIR / "data" / "demo"
DEFAULT_WAREHOUSE_PATH = PROJECT_DIR / "data" / "warehouse.duckdb"
#: CRM contact lists go to exports/ beside the warehouse file unless CW_EXPORT_DIR says.
EXPORT_DIR_NAME = "exports"
DEFAULT_EXPORT_DIR = DEFAULT_WAREHOUSE_PATH.parent / EXPORT_DIR_NAME
# The raw files of the contract (customer_warehouse.ingestion.SOURCES; a test keeps them equal).
RAW_SOURCE_NAMES = (
    "orders",
    "customers",
    "order_items",
    "products",
    "redemptions",
    "point_adjustments",
)
ENCODING_AUTO = "auto"
ENCODING_VARIABLE = "CW_RAW_ENCODING"
#: Seconds a step waits for the DuckDB writer pool while another run holds it, then its run
#: fails (orchestration/recovery/executor.py). Half an hour: several times the longest step at
#: benchmark scale (the dbt build for 1M customers, a few minutes; docs/benchmarks.md).
DEFAULT_POOL_WAIT_TIMEOUT_S = 1800.0
POOL_WAIT_TIMEOUT_VARIABLE = "CW_POOL_WAIT_TIMEOUT"
#: The serving copy's folder is this folder beside the warehouse file unless CW_SERVING_DIR
#: says otherwise: data/serving for the default warehouse, and a test's or a second
#: installation's warehouse never publishes into another one's folder.
SERVING_DIR_NAME = "serving"
DEFAULT_SERVING_KEEP = 3
#: A run whose newest raw delivery is older than this warns (asset checks, run tag, log):
#: daily exports plus half a day of slack for a late one.
DEFAULT_MAX_RAW_AGE_HOURS = 36.0
MAX_RAW_AGE_VARIABLE = "CW_MAX_RAW_AGE_HOURS"
#: Failed runs are written as one JSON line each to this file beside the warehouse file.
ALERT_LOG_NAME = "alerts.jsonl"
ALERT_LOG_VARIABLE = "CW_ALERT_LOG"
ALERT_WEBHOOK_VARIABLE = "CW_ALERT_WEBHOOK_URL"
DUCKDB_MEMORY_LIMIT_VARIABLE = "CW_DUCKDB_MEMORY_LIMIT"
DUCKDB_TEMP_DIR_VARIABLE = "CW_DUCKDB_TEMP_DIR"
#: What DuckDB's memory_limit accepts and this project passes on: a size with a unit, or a
#: share of the machine's memory.
_MEMORY_LIMIT = re.compile(r"^(\d+(\.\d+)?) ?(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB|%)$", re.IGNORECASE)


class ConfigError(ValueError):
    """A setting is invalid; the message names the variable and how to fix it."""


@dataclass(frozen=True)
class Settings:
    raw_dir: Path
    warehouse_path: Path
    as_of_date: date | None
    project_dir: Path = PROJECT_DIR
    # {raw source: Python codec name or "auto"}; see parse_raw_encodings.
    raw_encodings: Mapping[str, str] = field(default_factory=dict, hash=False)
    pool_wait_timeout_s: float = DEFAULT_POOL_WAIT_TIMEOUT_S
    # CRM contact lists (customer_warehouse.crm_export): owner-only files.
    export_dir: Path = DEFAULT_EXPORT_DIR
    # The serving copy (customer_warehouse.serving): its folder (None: serving/ beside the
    # warehouse file; load_settings always fills it) and how many versions to keep.
    serving_dir: Path | None = None
    serving_keep: int = DEFAULT_SERVING_KEEP
    # Freshness and alerts (customer_warehouse.freshness, customer_warehouse.alerts).
    max_raw_age_hours: float = DEFAULT_MAX_RAW_AGE_HOURS
    alert_log: Path | None = None  # None: alerts.jsonl beside the warehouse file
    alert_webhook_url: str | None = None
    # DuckDB resources, for dbt (profiles.yml) and every Python connection alike.
    duckdb_memory_limit: str | None = None
    duckdb_temp_dir: Path | None = None

    @property
    def serving_path(self) -> Path:
        """CW_SERVING_DIR, or serving/ beside the warehouse file."""
        return self.serving_dir or self.warehouse_path.parent / SERVING_DIR_NAME

    @property
    def alert_log_path(self) -> Path:
        """CW_ALERT_LOG, or alerts.jsonl beside the warehouse file."""
        return self.alert_log or self.warehouse_path.parent / ALERT_LOG_NAME

    @property
    def duckdb_config(self) -> dict[str, str]:
        """``duckdb.connect(config=...)`` for the warehouse: the memory limit and temporary
        folder when set (else DuckDB's defaults, as in profiles.yml)."""
        config: dict[str, str] = {}
        if self.duckdb_memory_limit:
            config["memory_limit"] = self.duckdb_memory_limit
        if self.duckdb_temp_dir:
            config["temp_directory"] = str(self.duckdb_temp_dir)
        return config

    @property
    def dbt_env(self) -> dict[str, str]:
        """Environment for a dbt subprocess that sees exactly these settings."""
        env = {"CW_RAW_DIR": str(self.raw_dir), "CW_WAREHOUSE_PATH": str(self.warehouse_path)}
        env["CW_AS_OF_DATE"] = self.as_of_date.isoformat() if self.as_of_date else ""
        env[DUCKDB_MEMORY_LIMIT_VARIABLE] = self.duckdb_memory_limit or ""
        env[DUCKDB_TEMP_DIR_VARIABLE] = str(self.duckdb_temp_dir or "")
        return env


def parse_as_of_date(value: str | None) -> date | None:
    """'' or None means "not set"; anything else must be an ISO date."""
    if _unset(value):
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(
            f"CW_AS_OF_DATE={value!r} is not a date. Set it as YYYY-MM-DD "
            "(for example CW_AS_OF_DATE=2025-06-30), or unset it to compute the warehouse "
            "as of the last order date in the data."
        ) from None


def _unset(value: str | None) -> bool:
    return value is None or value.strip() == ""


def _number(value: str, kind: type = float) -> float:
    """``value`` read as a ``kind`` (float or int), or nan where it is not one."""
    try:
        return kind(value.strip())
    except ValueError:
        return float("nan")


def _in_existing_folder(variable: str, value: str, fix: str) -> Path:
    """``value`` as an absolute path whose folder exists, or a ConfigError ending in ``fix``."""
    path = Path(value.strip()).expanduser().resolve()
    if not path.parent.is_dir():
        raise ConfigError(
            f"{variable}={value!r}: the folder {path.parent} does not exist. Create it, or {fix}"
        )
    return path


def _amount(
    variable: str, value: str | None, default: float, high: float, unit: str, purpose: str
) -> float:
    """A number of ``unit`` in (0, ``high``]; '' or None means ``default``. ``purpose`` says
    what the setting is for, in the error message."""
    if _unset(value):
        return default
    number = _number(value)
    if not 0 < number <= high:  # also false for nan
        raise ConfigError(
            f"{variable}={value!r} is not a number of {unit}. Set it to {purpose} (more than 0, "
            f"at most {high:g}), or unset it for the default ({default:g} {unit})."
        )
    return number


def parse_pool_wait_timeout(value: str | None) -> float:
    """CW_POOL_WAIT_TIMEOUT: seconds (> 0, at most a week); '' or None means the default."""
    return _amount(
        POOL_WAIT_TIMEOUT_VARIABLE,
        value,
        DEFAULT_POOL_WAIT_TIMEOUT_S,
        7 * 24 * 3600,
        "seconds",
        "how long a step may wait for the DuckDB writer pool while another run holds it, for "
        f"example {POOL_WAIT_TIMEOUT_VARIABLE}=3600",
    )


def parse_max_raw_age_hours(value: str | None) -> float:
    """CW_MAX_RAW_AGE_HOURS: hours (> 0, at most a year); '' or None means the default."""
    return _amount(
        MAX_RAW_AGE_VARIABLE,
        value,
        DEFAULT_MAX_RAW_AGE_HOURS,
        366 * 24,
        "hours",
        "how old the newest raw delivery may be before a run warns that it works on stale "
        f"data, for example {MAX_RAW_AGE_VARIABLE}=36",
    )


def parse_alert_log(value: str | None, warehouse_path: Path) -> Path | None:
    """CW_ALERT_LOG: a file (appended to) in an existing folder; None means the default."""
    if _unset(value):
        return None
    path = _in_existing_folder(
        ALERT_LOG_VARIABLE,
        value,
        f"unset {ALERT_LOG_VARIABLE} to write {ALERT_LOG_NAME} beside the warehouse file.",
    )
    if path.is_dir():
        raise ConfigError(
            f"{ALERT_LOG_VARIABLE}={value!r} is a folder; it must be the file failed runs are "
            f"appended to, for example {ALERT_LOG_VARIABLE}=/var/log/warehouse/alerts.jsonl (or "
            f"unset it: {ALERT_LOG_NAME} beside the warehouse file, {warehouse_path.parent})."
        )
    return path


def parse_webhook_url(value: str | None) -> str | None:
    """CW_ALERT_WEBHOOK_URL: an http(s) URL with a host, no spaces; '' or None: no webhook."""
    if _unset(value):
        return None
    url = value.strip()
    try:
        parts = urlsplit(url) if not any(c.isspace() for c in url) else None
        host = parts.hostname if parts is not None else None
    except ValueError:  # e.g. an unclosed [IPv6 address
        parts, host = None, None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise ConfigError(
            f"{ALERT_WEBHOOK_VARIABLE}={value!r} is not an http(s) URL. Set it to the URL that "
            "receives a JSON POST for every failed run, for example "
            f"{ALERT_WEBHOOK_VARIABLE}=https://hooks.example.com/warehouse (a Slack or Teams "
            "incoming webhook, an alerting service), or unset it to write the alert log only."
        )
    return url


def parse_duckdb_memory_limit(value: str | None) -> str | None:
    """CW_DUCKDB_MEMORY_LIMIT: a size DuckDB understands (``8GB``, ``1.5GiB``, ``75%``)."""
    if _unset(value):
        return None
    match = _MEMORY_LIMIT.match(value.strip())
    if (
        match is None
        or float(match.group(1)) <= 0
        or (match.group(3) == "%" and float(match.group(1)) > 100)
    ):
        raise ConfigError(
            f"{DUCKDB_MEMORY_LIMIT_VARIABLE}={value!r} is not a memory size. Set it to the most "
            "memory DuckDB may use in each process (dbt's and Dagster's), with a unit, for "
            f"example {DUCKDB_MEMORY_LIMIT_VARIABLE}=8GB, 1.5GiB or 50% (of the machine's "
            "memory); beyond it DuckDB spills to CW_DUCKDB_TEMP_DIR. Or unset it for DuckDB's "
            "default (80 % of the memory)."
        )
    return value.strip()


def encoding_variable(source: str) -> str:
    """The variable that sets the encoding of one raw file: CW_RAW_ENCODING_ORDERS, ..."""
    return f"{ENCODING_VARIABLE}_{source.upper()}"


def _parse_encoding(variable: str, value: str) -> str:
    name = value.strip().lower()
    if name == ENCODING_AUTO:
        return ENCODING_AUTO
    try:
        codec = codecs.lookup(name).name
        "order_id".encode(codec)  # LookupError for codecs that are not text encodings (base64)
    except LookupError:
        raise ConfigError(
            f"{variable}={value!r} is not a text encoding. Set it to auto (detect UTF-8, "
            "UTF-16 with BOM or GB18030 per file) or to the encoding of the export, for example "
            "utf-8, gb18030, gbk, big5, shift_jis, cp1252 or latin-1; or unset it."
        ) from None
    return codec


def parse_raw_encodings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{raw source: Python codec name or "auto"} from CW_RAW_ENCODING (every raw file) and
    CW_RAW_ENCODING_<SOURCE> (one file, wins). Unset or empty means auto."""
    env = os.environ if environ is None else environ
    default = ENCODING_AUTO
    if env.get(ENCODING_VARIABLE, "").strip():
        default = _parse_encoding(ENCODING_VARIABLE, env[ENCODING_VARIABLE])
    encodings = dict.fromkeys(RAW_SOURCE_NAMES, default)
    known = {encoding_variable(source): source for source in RAW_SOURCE_NAMES}
    for variable in sorted(env):
        if not variable.startswith(ENCODING_VARIABLE + "_"):
            continue
        if variable not in known:
            raise ConfigError(
                f"{variable} is not a setting: the raw files are "
                f"{', '.join(RAW_SOURCE_NAMES)}, so the per-file variables are "
                f"{', '.join(known)}. Rename it, or use {ENCODING_VARIABLE} for every file."
            )
        if env[variable].strip():
            encodings[known[variable]] = _parse_encoding(variable, env[variable])
    return encodings


def parse_serving_dir(value: str | None, warehouse_path: Path) -> Path:
    """CW_SERVING_DIR: a folder (created when publishing) in an existing folder."""
    if _unset(value):
        return warehouse_path.parent / SERVING_DIR_NAME
    path = _in_existing_folder(
        "CW_SERVING_DIR",
        value,
        "unset CW_SERVING_DIR to publish to serving/ beside the warehouse file.",
    )
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"CW_SERVING_DIR={value!r} is a file; it must be the folder the serving copy is "
            "published to, for example data/serving (or unset it: serving/ beside the "
            "warehouse file)."
        )
    return path


def parse_serving_keep(value: str | None) -> int:
    """CW_SERVING_KEEP: how many published versions to keep, a whole number >= 1."""
    if _unset(value):
        return DEFAULT_SERVING_KEEP
    keep = _number(value, int)
    if not keep >= 1:  # also true for nan
        raise ConfigError(
            f"CW_SERVING_KEEP={value!r} is not a number of versions. Set it to a whole number "
            f"of 1 or more (for example CW_SERVING_KEEP=3; 2 or more lets a reader that is "
            f"just opening the previous version still find it), or unset it for "
            f"{DEFAULT_SERVING_KEEP}."
        )
    return keep


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

    check_dbt_settings(env)
    return Settings(
        raw_dir=raw_dir,
        warehouse_path=warehouse_path,
        as_of_date=parse_as_of_date(env.get("CW_AS_OF_DATE")),
        raw_encodings=parse_raw_encodings(env),
        export_dir=_folder_setting(env, "CW_EXPORT_DIR", warehouse_path.parent / EXPORT_DIR_NAME),
        serving_dir=parse_serving_dir(env.get("CW_SERVING_DIR"), warehouse_path),
        serving_keep=parse_serving_keep(env.get("CW_SERVING_KEEP")),
        pool_wait_timeout_s=parse_pool_wait_timeout(env.get(POOL_WAIT_TIMEOUT_VARIABLE)),
        max_raw_age_hours=parse_max_raw_age_hours(env.get(MAX_RAW_AGE_VARIABLE)),
        alert_log=parse_alert_log(env.get(ALERT_LOG_VARIABLE), warehouse_path),
        alert_webhook_url=parse_webhook_url(env.get(ALERT_WEBHOOK_VARIABLE)),
        duckdb_memory_limit=parse_duckdb_memory_limit(env.get(DUCKDB_MEMORY_LIMIT_VARIABLE)),
        duckdb_temp_dir=_optional_folder_setting(env, DUCKDB_TEMP_DIR_VARIABLE),
    )


#: The outputs of profiles.yml a run may select with CW_DBT_TARGET.
DBT_TARGETS = ("duckdb", "spark")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def check_dbt_settings(env: Mapping[str, str]) -> None:
    """The variables profiles.yml reads: a known target and a plain schema name, so that no
    value from the environment reaches dbt's SQL as anything but an identifier."""
    target = env.get("CW_DBT_TARGET", "").strip()
    if target and target not in DBT_TARGETS:
        raise ConfigError(
            f"CW_DBT_TARGET={target!r} is not an output of profiles.yml; use one of "
            f"{', '.join(DBT_TARGETS)}, or unset it (duckdb)."
        )
    schema = env.get("CW_SPARK_DEFAULT_SCHEMA", "").strip()
    if schema and not _IDENTIFIER.match(schema):
        raise ConfigError(
            f"CW_SPARK_DEFAULT_SCHEMA={schema!r} is not a plain schema name: use letters, "
            "digits and underscores, starting with a letter (for example analytics)."
        )


def _optional_folder_setting(env: Mapping[str, str], variable: str) -> Path | None:
    """A folder setting without a default of ours (None when unset): not an existing file."""
    value = env.get(variable, "").strip()
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{variable}={value!r} is a file; it must be a folder (created when missing) on a "
            "disk with room for what DuckDB spills when a query needs more than "
            f"{DUCKDB_MEMORY_LIMIT_VARIABLE}, for example {variable}=/scratch/duckdb, or unset "
            "it for DuckDB's default (<warehouse file>.tmp)."
        )
    return path


def _folder_setting(env: Mapping[str, str], variable: str, default: Path) -> Path:
    """A folder the warehouse writes (created when needed): not an existing file."""
    value = env.get(variable, "").strip()
    path = Path(value).expanduser().resolve() if value else default
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{variable}={value!r} is a file; it must be a folder the warehouse can write "
            f"into (it is created when missing), or unset it to use {default}."
        )
    return path
