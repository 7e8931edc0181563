"""Crashes and reruns (docs/orchestration.md, "Crashes and reruns"): kill-safe writers and real
runs killed. Dead runs and the writer pool are in tests/test_dead_runs_and_pool_wait.py.

* Each writer is kill-safe: survey ingestion killed between the rows and the bookkeeping adds
  nothing twice; the report is replaced whole; a damaged warehouse file fails with its path and
  ``make rebuild``, which sets it aside.
* Real runs (``dagster job execute`` / ``asset materialize`` in a process group, SIGKILLed when a
  chosen step starts, tests/crash_harness.py): a quick one in ``make test`` (killed while the raw
  layer is written, then run again); the heavy ones kill the full job at every step of it, one
  run after another, then compare every table with an uninterrupted run, and rebuild a damaged
  file with ``make rebuild``; under ``make dev`` the sensor frees a dead run's slot."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster._core.events import DagsterEventType

from customer_warehouse import ingestion, tier_report
from customer_warehouse.ingestion import surveys
from orchestration.defs.resources import (
    REBUILD_COMMAND,
    WRITER_POOL,
    WarehouseResource,
    fail_fast_on_data_errors,
)
from orchestration.recovery import LIVE_STATUSES, WarehouseInUse, set_aside_warehouse

from . import crash_harness as harness
from .conftest import PROJECT_DIR
from .dagster_server import free_port, graphql, wait_for

DEMO_CUSTOMERS = 300
DEMO_SEED = 11


@pytest.fixture(scope="module")
def demo_raw(tmp_path_factory) -> Path:
    """Demo exports of 300 customers (with survey files): a full run takes about a minute."""
    folder = tmp_path_factory.mktemp("raw")
    subprocess.run(
        [sys.executable, "-m", "customer_warehouse.demo", "--out", str(folder)]
        + ["--customers", str(DEMO_CUSTOMERS), "--seed", str(DEMO_SEED), "--quiet"],
        cwd=PROJECT_DIR,
        check=True,
        timeout=300,
    )
    return folder


# --- the writers --------------------------------------------------------------------------


_KILL_AFTER_RESPONSES = textwrap.dedent(
    """
    import os, signal, sys
    import duckdb
    from customer_warehouse.ingestion import surveys

    insert = surveys._insert

    def insert_then_die(con, table, rows, schema):
        insert(con, table, rows, schema)
        if table == "raw.survey_responses" and rows:
            os.kill(os.getpid(), signal.SIGKILL)  # rows appended, bookkeeping not yet

    surveys._insert = insert_then_die
    surveys.ingest_surveys(duckdb.connect(sys.argv[1]), sys.argv[2])
    """
)


def _survey_tables(path: Path) -> dict[str, tuple[int, int]]:
    sums = harness.warehouse_checksums(path)
    return {table: sums[table] for table in sums if table.startswith("raw.survey_")}


def test_survey_ingestion_killed_between_rows_and_bookkeeping_adds_nothing_twice(
    demo_raw, tmp_path
):
    folder = demo_raw / "surveys"
    killed = tmp_path / "killed.duckdb"
    process = subprocess.run(
        [sys.executable, "-c", _KILL_AFTER_RESPONSES, str(killed), str(folder)],
        cwd=PROJECT_DIR,
        timeout=120,
    )
    assert process.returncode == -9  # SIGKILL, in the middle of the first file's transaction
    with duckdb.connect(str(killed)) as con:
        assert con.execute("select count(*) from raw.survey_responses").fetchone()[0] == 0
        surveys.ingest_surveys(con, folder)  # the rerun
    clean = tmp_path / "clean.duckdb"
    with duckdb.connect(str(clean)) as con:
        surveys.ingest_surveys(con, folder)
    assert _survey_tables(killed) == _survey_tables(clean)
    with duckdb.connect(str(killed), read_only=True) as con:
        assert con.execute(
            "select count(*) = count(distinct response_id) from raw.survey_responses"
        ).fetchone()[0]


def test_the_report_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    report = tmp_path / "tier_report.html"
    report.write_text("old report")

    def killed(*_args):
        raise KeyboardInterrupt  # stands for a kill between writing and renaming

    monkeypatch.setattr(tier_report.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        tier_report.write_atomically(report, "new report " * 10_000)
    assert report.read_text() == "old report"
    assert [p.name for p in tmp_path.iterdir()] == ["tier_report.html"]
    monkeypatch.undo()
    tier_report.write_atomically(report, "new report")
    assert report.read_text() == "new report"


def _damage(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.write(b"not a database " * 300)


def test_a_damaged_warehouse_fails_with_its_path_and_the_rebuild_command(tmp_path, monkeypatch):
    warehouse = tmp_path / "warehouse.duckdb"
    duckdb.connect(str(warehouse)).close()
    _damage(warehouse)
    monkeypatch.setenv("CW_RAW_DIR", str(tmp_path))
    monkeypatch.setenv("CW_WAREHOUSE_PATH", str(warehouse))
    with pytest.raises(dg.Failure) as failure, WarehouseResource().connect():
        pass
    assert str(warehouse) in failure.value.description
    assert REBUILD_COMMAND in failure.value.description
    # The same words when the damage shows only while reading a table.
    block_error = duckdb.Error("Corrupt database file: computed checksum 1 does not match")
    with pytest.raises(dg.Failure, match=REBUILD_COMMAND), fail_fast_on_data_errors("Reading"):
        raise block_error


_HOLD_OPEN = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('open', flush=True)"


def test_set_aside_keeps_the_damaged_file_and_refuses_while_it_is_open(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    duckdb.connect(str(warehouse)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_OPEN + "; time.sleep(60)", str(warehouse)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(WarehouseInUse, match="open in another process"):
            set_aside_warehouse(warehouse)
        assert warehouse.exists()
    finally:
        holder.kill()
        holder.wait()
    (tmp_path / "warehouse.duckdb.wal").write_bytes(b"log")
    _damage(warehouse)

    moved = set_aside_warehouse(warehouse)

    assert sorted(p.name.split(".corrupt-")[0] for p in moved) == [
        "warehouse.duckdb",
        "warehouse.duckdb.wal",
    ]
    assert all(p.exists() for p in moved) and not warehouse.exists()
    assert set_aside_warehouse(warehouse) == []  # nothing there: the next run builds it


# --- real runs, killed ----------------------------------------------------------------------


def _raw_layer_reference(raw_dir: Path, path: Path) -> dict[str, tuple[int, int]]:
    """The raw layer as an uninterrupted run writes it: the assets call exactly these two."""
    with duckdb.connect(str(path)) as con:
        ingestion.load_raw(con, raw_dir)
        surveys.ingest_surveys(con, raw_dir / "surveys")
    return harness.warehouse_checksums(path)


def test_a_run_killed_while_writing_is_cleaned_up_and_rerun_to_the_same_tables(demo_raw, tmp_path):
    """The quick kill: the raw layer (both writers of it) of a real run, SIGKILLed while it
    ingests the surveys and holds the writer pool; the same command again frees the slot, says
    so, and writes exactly what an uninterrupted load writes."""
    setup = harness.JobSetup.create(tmp_path, demo_raw)
    killed = harness.kill_at_step(
        setup, tmp_path / "killed.log", "survey_files", delay=0.05, select="group:raw"
    )
    killed_run = harness.run_id_of(killed)
    assert killed_run

    code, output = harness.run(setup, tmp_path / "rerun.log", select="group:raw")

    assert code == 0, harness.tail(tmp_path / "rerun.log")
    assert f"Cleaned up run {killed_run}" in output
    assert f"freed 1 slot(s) of pool {WRITER_POOL}" in output
    assert "Step blocked by limit" not in output
    expected = _raw_layer_reference(demo_raw, tmp_path / "reference.duckdb")
    assert harness.differences(expected, harness.warehouse_checksums(setup.warehouse)) == []


#: Seconds into a step before the kill: about half of the step on the demo data (300
#: customers), so the kill lands while the step writes; 0 for steps that take under a second.
KILL_DELAYS = {
    "raw_files": 0.2,
    "survey_files": 0.1,
    "dbt_models": 15.0,
    "customer_predictions": 6.0,
    "loyalty_points": 0.2,
    "marts__prediction_backtest": 1.0,
    "tier_history": 6.0,  # a dbt subprocess: start-up, then the incremental delete+insert
    "reports__tier_report": 0.0,
}


@pytest.fixture(scope="module")
def uninterrupted(demo_raw, tmp_path_factory) -> dict:
    """One uninterrupted full_refresh: its tables' checksums and the job's steps, in order."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    setup = harness.JobSetup.create(folder, demo_raw)
    code, output = harness.run(setup, folder / "run.log")
    assert code == 0, harness.tail(folder / "run.log")
    return {
        "checksums": harness.warehouse_checksums(setup.warehouse),
        "steps": harness.started_steps(output),
        "warehouse": setup.warehouse,
        "work": setup.work,
    }


@pytest.mark.heavy
def test_killed_at_every_step_then_run_again_equals_an_uninterrupted_run(
    demo_raw, uninterrupted, tmp_path
):
    """One instance, one warehouse: a run killed at the first kill point, the next run killed
    at the second, ... then one run to the end. Each run must clean up the one killed before
    it; the end result must equal the uninterrupted run, table by table."""
    steps = uninterrupted["steps"]
    setup = harness.JobSetup.create(tmp_path, demo_raw, work=uninterrupted["work"])
    points = {name: harness.resolve_kill_point(name, steps) for name in harness.KILL_POINTS}
    skipped = [
        f"{name}: job full_refresh has no step {harness.KILL_POINTS[name]!r} (yet)"
        for name, step in points.items()
        if step is None
    ]
    previous = None
    started = time.monotonic()
    for number, (name, step) in enumerate((n, s) for n, s in points.items() if s):
        output = harness.kill_at_step(
            setup, tmp_path / f"{number}-{step}.log", step, delay=KILL_DELAYS.get(step, 0.5)
        )
        if previous:
            assert f"Cleaned up run {previous}" in output, f"after the kill before {name}"
        previous = harness.run_id_of(output)

    code, output = harness.run(setup, tmp_path / "final.log")

    assert code == 0, harness.tail(tmp_path / "final.log")
    assert f"Cleaned up run {previous}" in output
    killed = sum(1 for step in points.values() if step)
    print(
        f"{killed} kill points, {len(skipped)} skipped ({'; '.join(skipped) or 'none'}); "
        f"{killed + 1} runs in {time.monotonic() - started:.0f} s"
    )
    assert killed >= 7
    assert (
        harness.differences(
            uninterrupted["checksums"], harness.warehouse_checksums(setup.warehouse)
        )
        == []
    )


@pytest.mark.heavy
def test_a_damaged_warehouse_stops_the_run_and_make_rebuild_rebuilds_it(
    demo_raw, uninterrupted, tmp_path
):
    setup = harness.JobSetup.create(tmp_path, demo_raw, work=uninterrupted["work"])
    shutil.copy(uninterrupted["warehouse"], setup.warehouse)
    _damage(setup.warehouse)

    code, output = harness.run(setup, tmp_path / "damaged.log")
    assert code != 0
    assert f"The warehouse file {setup.warehouse} is damaged" in output
    assert REBUILD_COMMAND in output

    rebuild = subprocess.run(
        ["make", "--no-print-directory", "rebuild", f"RUN_CONFIG={setup.work / 'run_config.yaml'}"],
        cwd=PROJECT_DIR,
        env=setup.env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert rebuild.returncode == 0, rebuild.stdout[-4000:] + rebuild.stderr[-4000:]
    assert "aside to" in rebuild.stdout
    assert list(tmp_path.glob("warehouse.duckdb.corrupt-*"))
    assert (
        harness.differences(
            uninterrupted["checksums"], harness.warehouse_checksums(setup.warehouse)
        )
        == []
    )


_LAUNCH = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


@pytest.mark.heavy
def test_under_make_dev_the_sensor_frees_a_dead_runs_slot_and_a_queued_run_starts(
    demo_raw, uninterrupted, tmp_path, dead_pid
):
    """The daemon's way (schedule, sensor, the UI's launchpad): a queued run is not even started
    while a dead run holds the writer pool; the sensor dead_run_cleanup frees it, the run
    starts and builds the same warehouse. (The demo data's survey files also make the sensor
    new_survey_files start a survey_refresh run: both must end.)"""
    setup = harness.JobSetup.create(tmp_path, demo_raw, work=uninterrupted["work"])
    with dg.DagsterInstance.from_config(str(setup.home)) as instance:
        instance.event_log_storage.set_concurrency_slots(WRITER_POOL, 1)
        dead = harness.started_run(instance, dead_pid)
        instance.event_log_storage.claim_concurrency_slot(WRITER_POOL, dead.run_id, "raw_files")
    port = free_port()
    log = tmp_path / "dagster_dev.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [harness.DAGSTER, "dev", "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_DIR, env=setup.env(), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        params = {
            "selector": {
                "repositoryLocationName": "customer_warehouse",
                "repositoryName": "__repository__",
                "jobName": "full_refresh",
            },
            "runConfigData": {
                "ops": {
                    "reports__tier_report": {
                        "config": {"out_path": str(setup.work / "tier_report.html")}
                    }
                }
            },
        }
        launch = functools.partial(graphql, port, _LAUNCH, {"params": params})
        launched = wait_for("the run launch", launch, 300, server, log)
        assert launched["data"]["launchRun"]["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["data"]["launchRun"]["run"]["runId"]
        query = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"

        def finished():
            status = graphql(port, query, {"id": run_id})["data"]["runOrError"]["status"]
            return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

        status = wait_for("the run to finish", finished, 900, server, log)
        assert status == "SUCCESS", harness.tail(log)
        with dg.DagsterInstance.from_config(str(setup.home)) as instance:
            busy = dg.RunsFilter(statuses=[*LIVE_STATUSES, dg.DagsterRunStatus.QUEUED])
            wait_for("no busy runs", lambda: instance.get_runs_count(busy) == 0, 900, server, log)
            failure = instance.all_logs(dead.run_id, of_type=DagsterEventType.RUN_FAILURE)
            assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    finally:
        harness.kill_group(server)
    assert f"its process (pid {dead_pid}) is gone" in failure[0].dagster_event.message
    assert "dead_run_cleanup" in log.read_text() or "Cleaned up run" in log.read_text()
    assert (
        harness.differences(
            uninterrupted["checksums"], harness.warehouse_checksums(setup.warehouse)
        )
        == []
    )
