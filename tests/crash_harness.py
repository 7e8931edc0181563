"""Kill real runs and compare warehouses (tests/test_crash_recovery.py); record a run started in a
given process (tests/test_dead_runs_and_pool_wait.py).

A run is the real command of ``make run``, ``dagster job execute -m orchestration.definitions -j
full_refresh`` (or ``dagster asset materialize --select ...`` for a cheaper part of the graph), in
its own process group with a temporary ``DAGSTER_HOME``, raw folder, warehouse file, dbt target
and log folders and report path. :func:`kill_at_step` starts one and SIGKILLs the whole group
(Dagster, dbt and its threads) when a chosen step has started, after an optional delay into it;
:func:`warehouse_checksums` gives every table of every schema a content checksum, leaving out
the columns in :data:`RUN_DEPENDENT_COLUMNS`.

Kill points are named as the issue names them (:data:`KILL_POINTS`) and resolved against the
steps an uninterrupted run of the job actually started (:func:`started_steps`), so a step added
to the job later (the serving publish) is covered as soon as it exists, and a kill point whose
step does not exist yet is skipped with that reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData

from .conftest import PROJECT_DIR
from .dagster_job import TEST_PII_KEY

DAGSTER = str(Path(sys.executable).parent / "dagster")

#: What the issue names → the step of job full_refresh that does it (exact step key, or the
#: first step whose key contains it).
KILL_POINTS: dict[str, str] = {
    "raw loading": "raw_files",
    "survey ingestion": "survey_files",
    "dbt build": "dbt_models",
    "predictions": "customer_predictions",
    "loyalty": "loyalty_points",
    "backtest": "marts__prediction_backtest",
    "tier history": "tier_history",
    "tier report": "reports__tier_report",
    "publishing": "serving",
}

#: Columns whose value depends on when a run happened, not on the data; everything else of
#: every table must be equal after a kill and a rerun. {table: {column: why}}
RUN_DEPENDENT_COLUMNS: dict[str, dict[str, str]] = {
    "raw.load_manifest": {"loaded_at": "wall clock of the raw load"},
    "raw.deliveries": {
        "loaded_at": "wall clock of the raw load",
        "verified_at": "wall clock of the last hash of the file",
        "status_changed_at": "wall clock of the load that replaced or removed the file",
        "path": "where the file was found (a copy of the folder has another path)",
        "modified_at": "the file's modification time (a copy has its own)",
        "mtime_ns": "the file's modification time (a copy has its own)",
    },
    **{
        f"raw.{table}": {
            "ingested_at": "wall clock of the ingestion; a file ingested by a killed run keeps "
            "its first ingestion time (survey history is append-only)"
        }
        for table in ("survey_responses", "survey_rejects", "survey_files")
    },
    "marts.customer_tiers": {
        "computed_at": "the as-of date at the time of day the dbt run started "
        "(macros/tiers/tiers_computed_at.sql)"
    },
}


@dataclass(frozen=True)
class JobSetup:
    """Where one series of runs reads and writes; every run of a series shares the instance."""

    home: Path
    raw_dir: Path
    warehouse: Path
    work: Path  # dbt target and logs (shared by the series: one dbt parse), report, run logs

    @classmethod
    def create(cls, folder: Path, raw_dir: Path, *, work: Path | None = None) -> JobSetup:
        home = folder / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_DIR / "orchestration" / "dagster.yaml", home / "dagster.yaml")
        setup = cls(home, raw_dir, folder / "warehouse.duckdb", work or folder / "work")
        setup.work.mkdir(parents=True, exist_ok=True)
        (setup.work / "run_config.yaml").write_text(
            "ops:\n  reports__tier_report:\n    config:\n"
            f"      out_path: '{setup.work / 'tier_report.html'}'\n"
        )
        return setup

    def env(self, **extra: str) -> dict[str, str]:
        keep = {
            k: v for k, v in os.environ.items() if not k.startswith(("CW_", "DBT_", "DAGSTER_"))
        }
        keep.update(
            DAGSTER_HOME=str(self.home),
            CW_RAW_DIR=str(self.raw_dir),
            CW_WAREHOUSE_PATH=str(self.warehouse),
            CW_PII_KEY=TEST_PII_KEY,
            CW_EXPORT_DIR=str(self.work / "exports"),
            CW_SERVING_DIR=str(self.work / "serving"),
            DBT_TARGET_PATH=str(self.work / "target"),
            DBT_LOG_PATH=str(self.work / "logs"),
            DBT_PROFILES_DIR=str(PROJECT_DIR),
            DBT_SEND_ANONYMOUS_USAGE_STATS="false",
        )
        keep.update(extra)
        return keep

    def command(self, select: str | None = None) -> list[str]:
        module = ["-m", "orchestration.definitions"]
        if select is None:
            config = ["-c", str(self.work / "run_config.yaml")]
            return [DAGSTER, "job", "execute", *module, "-j", "full_refresh", *config]
        return [DAGSTER, "asset", "materialize", *module, "--select", select]


def start(setup: JobSetup, log: Path, *, select: str | None = None, **env: str):
    """Start a run in its own process group (so a kill reaches dbt too); output to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            setup.command(select),
            cwd=PROJECT_DIR,
            env=setup.env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def run(setup: JobSetup, log: Path, *, select: str | None = None, timeout: float = 1200, **env):
    """A run to its end (bounded); returns (exit code, output)."""
    process = start(setup, log, select=select, **env)
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        raise AssertionError(f"run did not end in {timeout} s:\n{tail(log)}") from None
    return code, log.read_text(errors="replace")


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the run's whole process group and reap the leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def step_started(output: str, step: str) -> bool:
    return f" - {step} - STEP_START - " in output


def run_id_of(output: str) -> str | None:
    found = re.search(r" - ([0-9a-f]{8}-[0-9a-f-]{27}) - \d+ - RUN_START - ", output)
    return found.group(1) if found else None


def started_steps(output: str) -> list[str]:
    """The steps a run started, in order (the job's steps, for an uninterrupted run)."""
    return re.findall(r" - (\S+) - STEP_START - ", output)


def resolve_kill_point(name: str, steps: list[str]) -> str | None:
    """The step for a kill point of :data:`KILL_POINTS`, or None when the job has none."""
    wanted = KILL_POINTS[name]
    if wanted in steps:
        return wanted
    return next((step for step in steps if wanted in step), None)


def kill_at_step(
    setup: JobSetup,
    log: Path,
    step: str,
    *,
    delay: float = 0.0,
    select: str | None = None,
    timeout: float = 900,
) -> str:
    """Start a run, SIGKILL its process group `delay` seconds after `step` started; return its
    output. Fails if the run ends (or does not reach the step) first."""
    process = start(setup, log, select=select)
    deadline = time.monotonic() + timeout
    try:
        while not step_started(log.read_text(errors="replace"), step):
            if process.poll() is not None:
                raise AssertionError(f"the run ended before step {step} started:\n{tail(log)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"step {step} did not start in {timeout} s:\n{tail(log)}")
            time.sleep(0.1)
        time.sleep(delay)
        if process.poll() is not None:
            raise AssertionError(f"the run ended within {delay} s of {step}:\n{tail(log)}")
    finally:
        kill_group(process)
    return log.read_text(errors="replace")


def _columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[str]:
    return [
        name
        for (name,) in con.execute(
            "select column_name from information_schema.columns "
            "where table_schema = ? and table_name = ? order by ordinal_position",
            [schema, table],
        ).fetchall()
    ]


def warehouse_checksums(path: Path) -> dict[str, tuple[int, int]]:
    """{schema.table: (rows, sum of row hashes)} for every table and view of the file, without
    the columns of :data:`RUN_DEPENDENT_COLUMNS` (order-independent, so equal content is equal
    whatever the physical order)."""
    with duckdb.connect(str(path), read_only=True) as con:
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_catalog = current_database() order by all"
        ).fetchall()
        sums = {}
        for schema, table in tables:
            name = f"{schema}.{table}"
            skip = RUN_DEPENDENT_COLUMNS.get(name, {})
            columns = [c for c in _columns(con, schema, table) if c not in skip]
            quoted = ", ".join(f'"{c}"' for c in columns)
            rows, total = con.execute(
                f'select count(*), coalesce(sum(hash({quoted})), 0) from "{schema}"."{table}"'
            ).fetchone()
            sums[name] = (rows, int(total))
    return sums


def differences(expected: dict, actual: dict) -> list[str]:
    """Readable differences between two :func:`warehouse_checksums`."""
    lines = [f"missing table {t}" for t in sorted(set(expected) - set(actual))]
    lines += [f"extra table {t}" for t in sorted(set(actual) - set(expected))]
    for table in sorted(set(expected) & set(actual)):
        if expected[table] != actual[table]:
            (rows, _), (got_rows, _) = expected[table], actual[table]
            lines.append(f"{table}: {rows} rows expected, {got_rows} rows, or other content")
    return lines


def started_run(instance: dg.DagsterInstance, pid: int) -> dg.DagsterRun:
    """A full_refresh run that started in process `pid`, as the executor records it."""
    run = instance.add_run(dg.DagsterRun(job_name="full_refresh", run_id=str(uuid.uuid4())))
    instance.report_dagster_event(
        DagsterEvent(DagsterEventType.PIPELINE_START.value, job_name="full_refresh"),
        run_id=run.run_id,
    )
    instance.report_engine_event(
        f"Executing steps in process (pid: {pid})",
        run,
        EngineEventData.in_process(pid),
    )
    return instance.get_run_by_id(run.run_id)
