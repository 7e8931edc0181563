"""Helpers to build the warehouse on a local, in-process Spark (dbt-spark `method: session`).

Why in-process: dbt-spark's session connection gets its Spark with
``SparkSession.builder.enableHiveSupport().getOrCreate()``. The only way to give it a small,
test-owned Spark (local[2], UTC, warehouse in a temporary folder) is to create that session
first, in the same process, and then run dbt through ``dbtRunner``: ``getOrCreate`` returns the
session that already exists.

The raw loader here is the Spark twin of ``customer_warehouse.ingestion``: same contract
(``ingestion.SOURCES``, the same structural checks), same tables (every contract column as
``string``, then ``_source_file`` string, ``_source_row`` bigint (1-based data row),
``_load_error`` and ``_raw_line`` strings, null: Spark's reader runs FAILFAST here).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from customer_warehouse import ingestion, privacy

PROJECT_DIR = Path(__file__).resolve().parents[2]

# Spark SQL types for the DuckDB types the raw survey tables use.
_DUCKDB_TO_SPARK = {
    "VARCHAR": "string",
    "INTEGER": "int",
    "BIGINT": "bigint",
    "TIMESTAMP": "timestamp",
    "DOUBLE": "double",
    "BOOLEAN": "boolean",
    "DATE": "date",
}


def java_problem() -> str | None:
    """Why Spark cannot start here (no Java), or None when it can."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return None
    if shutil.which("java"):
        return None
    return (
        "no Java runtime: PySpark needs Java 17+ on PATH or in JAVA_HOME "
        "(Debian: apt-get install openjdk-17-jre-headless)"
    )


def start_spark(work_dir: Path):
    """A small local Spark for tests: 2 cores, 2 shuffle partitions, UTC, no UI, 1 GB driver.

    The catalog is Spark's in-memory one (no Hive/Derby metastore: dbt-spark's session method
    does not need it, and it saves the Derby start-up); tables are Parquet files under
    ``work_dir/spark-warehouse``. Must run before anything else in the process touches Spark,
    because these settings are fixed when the JVM starts.
    """
    from pyspark.sql import SparkSession

    if SparkSession.getActiveSession() is not None:
        raise RuntimeError(
            "A Spark session is already running in this process, with settings this test did "
            "not choose. Run the Spark tests in their own pytest process (pytest -m spark)."
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    builder = (
        SparkSession.builder.master("local[2]")
        .appName("customer-warehouse-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "1g")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.catalogImplementation", "in-memory")
        .config("spark.sql.warehouse.dir", str(work_dir / "spark-warehouse"))
        .config("spark.local.dir", str(work_dir / "spark-local"))
        .config("spark.log.structuredLogging.enabled", "false")
        .config("spark.pyspark.python", sys.executable)
        # Test data is tiny, so Spark's time goes into planning and compiling, not data:
        # adaptive re-planning and whole-stage code generation cost more than they save, and
        # the JIT's C1 compiler alone warms up faster. About 1.5x faster here; same results.
        .config("spark.sql.adaptive.enabled", "false")
        .config("spark.sql.codegen.wholeStage", "false")
        .config(
            "spark.driver.extraJavaOptions",
            # C1 only needs an explicit code cache: its 48 MB default fills up mid-build.
            "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=256m -Duser.timezone=UTC",
        )
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def load_raw_into_spark(spark, raw_dir: Path) -> dict[str, int]:
    """Load the raw files of `raw_dir` into `raw.<source>` tables; return rows per source.

    Structural checks are the loader's own (missing required column, duplicated header column,
    both csv and parquet present), so a file the DuckDB loader refuses is refused here too.
    CSV is read whole (multiLine: quoted line breaks allowed, and a file is never split), so
    the row number is the data row of the file, as in the DuckDB loader.
    """
    from pyspark.sql import functions as F

    spark.sql(f"create database if not exists {ingestion.RAW_SCHEMA}")
    rows: dict[str, int] = {}
    loaded: list[tuple[str, Path, int]] = []
    for spec in ingestion.SOURCES:
        path = ingestion.find_source_file(raw_dir, spec)
        table = f"{ingestion.RAW_SCHEMA}.{spec.name}"
        if path is None:
            columns = ", ".join(f"cast(null as string) as {c}" for c in spec.columns)
            df = spark.sql(
                f"select {columns}, cast(null as string) as _source_file, "
                "cast(null as bigint) as _source_row, cast(null as string) as _load_error, "
                "cast(null as string) as _raw_line, cast(null as string) as _delivery, "
                "cast(null as string) as _file_sha256 where false"
            )
        else:
            if path.suffix == ".csv":
                header = ingestion.csv_header(path)
                reader = spark.read.options(
                    header=True,
                    sep=",",
                    quote='"',
                    escape='"',
                    multiLine=True,
                    encoding="UTF-8",
                    mode="FAILFAST",
                    inferSchema=False,
                )
                df = reader.csv(str(path))
            else:
                df = spark.read.parquet(str(path))
            present = {
                name.strip().lstrip("\ufeff").strip('"').strip().lower(): name
                for name in df.columns
            }
            if path.suffix != ".csv":
                header = list(present)
            ingestion.check_columns(path, spec, header)
            selected = [
                (F.col(f"`{present[c]}`") if c in present else F.lit(None)).cast("string").alias(c)
                for c in spec.columns
            ]
            df = df.select(
                *selected,
                F.lit(path.name).alias("_source_file"),
                (F.monotonically_increasing_id() + 1).cast("bigint").alias("_source_row"),
                # FAILFAST above: a malformed line stops the load, so no row carries an error.
                F.lit(None).cast("string").alias("_load_error"),
                F.lit(None).cast("string").alias("_raw_line"),
                # One full export per source: one delivery (docs/raw-data.md).
                F.lit(path.stem).alias("_delivery"),
                F.lit(ingestion.file_sha256(path)).alias("_file_sha256"),
            )
        df.write.mode("overwrite").format("parquet").saveAsTable(table)
        rows[spec.name] = spark.table(table).count()
        if path is not None:
            loaded.append((spec.name, path, rows[spec.name]))
    _write_bookkeeping(spark, loaded)
    return rows


def _write_bookkeeping(spark, loaded: list[tuple[str, Path, int]]) -> None:
    """The loader's bookkeeping tables, as the DuckDB loader leaves them after one load: one
    `loaded` row per file in raw.deliveries, no erasure request. Incremental models name them
    as dependencies (dbt's unit tests read their columns), on Spark too."""
    spark.sql(f"drop table if exists {ingestion.DELIVERIES_TABLE}")
    spark.sql(
        f"create table {ingestion.DELIVERIES_TABLE} (source string, file string, delivery string, "
        "file_sha256 string, size_bytes bigint, modified_at timestamp, mtime_ns bigint, "
        "path string, rows bigint, malformed_rows bigint, encoding string, delimiter string, "
        "ignored_columns string, loaded_at timestamp, verified_at timestamp, status string, "
        "status_changed_at timestamp) using parquet"
    )
    if loaded:
        now = datetime.now(UTC).replace(tzinfo=None)
        records = [
            (name, path.name, path.stem, ingestion.file_sha256(path), path.stat().st_size, now,
             path.stat().st_mtime_ns, str(path), count, 0, "UTF-8", ",", "", now, now,
             ingestion.LOADED, now)
            for name, path, count in loaded
        ]  # fmt: skip
        spark.createDataFrame(records, schema=spark.table(ingestion.DELIVERIES_TABLE).schema) \
            .write.mode("append").insertInto(ingestion.DELIVERIES_TABLE)  # fmt: skip
    spark.sql(f"drop table if exists {privacy.ERASURE_TABLE}")
    spark.sql(
        f"create table {privacy.ERASURE_TABLE} (customer_id string, requested_at string, "
        "applied_at timestamp, compacted_at timestamp) using parquet"
    )


@dataclass
class TableCopy:
    """A DuckDB table read into memory: column names, Spark types, rows."""

    name: str
    columns: list[str]
    spark_types: list[str]
    rows: list[tuple]


def read_duckdb_table(duckdb_path: Path, table: str) -> TableCopy:
    """Read one (small) DuckDB table, mapping its column types to Spark's."""
    with duckdb.connect(str(duckdb_path), read_only=True) as con:
        described = con.execute(f"describe {table}").fetchall()
        rows = con.execute(f"select * from {table}").fetchall()
    spark_types = []
    for name, duck_type, *_ in described:
        base = duck_type.split("(")[0].upper()
        if base == "DECIMAL":
            spark_types.append(duck_type.lower())
        elif base in _DUCKDB_TO_SPARK:
            spark_types.append(_DUCKDB_TO_SPARK[base])
        else:
            raise TypeError(f"{table}.{name}: no Spark type for DuckDB type {duck_type}")
    return TableCopy(table, [row[0] for row in described], spark_types, rows)


def write_table_to_spark(spark, copy: TableCopy) -> int:
    """Create `copy.name` in Spark with the same columns, types and rows.

    Used for raw.survey_responses: survey files are validated and typed by the Python
    ingestion (customer_warehouse.surveys), which writes DuckDB; dbt only stages the result.
    Timestamps travel as timestamp_ntz (wall clock, UTC) and are cast to timestamp in Spark's
    UTC session, so no Python-side time zone can shift them.
    """
    pairs = list(zip(copy.columns, copy.spark_types, strict=True))
    transfer_schema = ", ".join(
        f"`{n}` {'timestamp_ntz' if t == 'timestamp' else t}" for n, t in pairs
    )
    df = spark.createDataFrame(copy.rows, schema=transfer_schema)
    df = df.selectExpr(*[f"cast(`{n}` as {t}) as `{n}`" for n, t in pairs])
    spark.sql(f"create database if not exists {copy.name.split('.')[0]}")
    df.write.mode("overwrite").format("parquet").saveAsTable(copy.name)
    return len(copy.rows)


@dataclass
class DbtRun:
    """What one in-process dbt invocation did."""

    success: bool
    statuses: dict[str, str] = field(default_factory=dict)  # unique_id -> status
    messages: dict[str, str] = field(default_factory=dict)  # unique_id -> message (failures)
    exception: BaseException | None = None

    def failures(self) -> dict[str, str]:
        """Nodes that did not succeed. An exposure is never run (`dbt build` reports it as
        no-op), so only its other statuses count."""
        return {
            uid: f"{status}: {self.messages.get(uid, '')}"
            for uid, status in self.statuses.items()
            if status not in ("success", "pass")
            and not (uid.startswith("exposure.") and status == "no-op")
        }

    def count(self, resource_type: str, status: str | None = None) -> int:
        return sum(
            1
            for uid, st in self.statuses.items()
            if uid.split(".")[0] == resource_type and (status is None or st == status)
        )


def run_dbt_in_process(args: Sequence[str], work_dir: Path) -> DbtRun:
    """Run dbt with the Spark target in this process (so it uses the session started here)."""
    from dbt.cli.main import dbtRunner

    full_args = [
        *args,
        "--target",
        "spark",
        "--project-dir",
        str(PROJECT_DIR),
        "--profiles-dir",
        str(PROJECT_DIR),
        "--target-path",
        str(work_dir / "target"),
        "--log-path",
        str(work_dir / "logs"),
    ]
    # Like tests/conftest.dbt_env: the caller's CW_* / DBT_* settings (CW_AS_OF_DATE, a target
    # path, ...) must not leak into a build that is compared with a clean DuckDB build.
    saved = {k: v for k, v in os.environ.items() if k.startswith(("CW_", "DBT_"))}
    try:
        for key in saved:
            del os.environ[key]
        os.environ["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
        result = dbtRunner().invoke(full_args)
    finally:
        for key in [k for k in os.environ if k.startswith(("CW_", "DBT_"))]:
            del os.environ[key]
        os.environ.update(saved)
    run = DbtRun(success=bool(result.success), exception=result.exception)
    for node_result in getattr(result.result, "results", None) or []:
        uid = node_result.node.unique_id
        run.statuses[uid] = str(node_result.status)
        if node_result.message:
            run.messages[uid] = str(node_result.message)
    return run


# ---------------------------------------------------------------------------------------------
# Comparing tables across engines


def _normalize(value: Any, float_digits: int) -> Any:
    """One cell in an engine-neutral form: numbers rounded, timestamps as text."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, Decimal | float):
        return round(float(value), float_digits) + 0.0  # + 0.0 turns -0.0 into 0.0
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    return repr(value)


def normalize_rows(rows: Iterable[Sequence[Any]], float_digits: int = 6) -> Counter:
    """A multiset of normalized rows, so row order does not matter."""
    return Counter(tuple(_normalize(v, float_digits) for v in row) for row in rows)


def spark_rows(spark, table: str, columns: Sequence[str], date_only: Iterable[str] = ()) -> list:
    """Rows of a Spark table; timestamps read as UTC wall-clock (timestamp_ntz) values, and the
    `date_only` columns as their date."""
    types = dict(spark.table(table).dtypes)
    date_only = set(date_only)
    select = ", ".join(
        f"cast(`{c}` as date) as `{c}`"
        if c in date_only
        else f"cast(`{c}` as timestamp_ntz) as `{c}`"
        if types[c] == "timestamp"
        else f"`{c}`"
        for c in columns
    )
    return [tuple(row) for row in spark.sql(f"select {select} from {table}").collect()]


def duckdb_rows(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: Sequence[str],
    date_only: Iterable[str] = (),
) -> list:
    date_only = set(date_only)
    select = ", ".join(
        f'cast("{c}" as date) as "{c}"' if c in date_only else f'"{c}"' for c in columns
    )
    return con.execute(f"select {select} from {table}").fetchall()


_INTEGER_TYPES = {"tinyint", "smallint", "int", "integer", "bigint", "hugeint", "long", "short"}


def type_family(type_name: str) -> str:
    """What a column type means, engine-neutral: integer widths differ between the engines
    (DuckDB sums integers to HUGEINT, Spark's row_number is INT) and do not matter here; a
    decimal's scale does (it is the number of cents), its precision does not."""
    name = type_name.strip().lower()
    if name.startswith("decimal"):
        scale = name.split(",")[1].rstrip(")").strip() if "," in name else "0"
        return f"decimal(scale {scale})"
    if name in _INTEGER_TYPES:
        return "integer"
    if name in ("varchar", "string", "text") or name.startswith("varchar"):
        return "string"
    if name in ("double", "float", "real"):
        return "floating"
    if name in ("timestamp", "timestamp_ntz"):
        return "timestamp"
    return name


def describe_difference(left: Counter, right: Counter, limit: int = 5) -> str:
    only_left = list((left - right).elements())[:limit]
    only_right = list((right - left).elements())[:limit]
    return (
        f"{sum(left.values())} vs {sum(right.values())} rows; "
        f"only on Spark (first {limit}): {only_left}; only on DuckDB: {only_right}"
    )
