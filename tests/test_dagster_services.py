"""`make dev`'s command for real: `dagster dev` (webserver + daemon; the code location comes
from pyproject.toml's [tool.dagster]) on the loopback address with a temporary DAGSTER_HOME
lists the whole asset graph, the schedule and the sensor, and its daemons report healthy.
Every wait is bounded and the processes are always stopped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import FIXTURES, PROJECT_DIR
from .dagster_server import free_port, graphql, wait_for

pytestmark = pytest.mark.heavy

STARTUP_TIMEOUT_S = 300
DAEMON_TIMEOUT_S = 180


@pytest.fixture
def dagster_dev(tmp_path) -> Iterator[tuple[int, subprocess.Popen, Path]]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_DIR / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    raw = tmp_path / "raw"  # no surveys/ folder: the sensor has nothing to start
    shutil.copytree(FIXTURES / "minimal", raw)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CW_", "DBT_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        CW_RAW_DIR=str(raw),
        CW_WAREHOUSE_PATH=str(tmp_path / "warehouse.duckdb"),
        DBT_TARGET_PATH=str(tmp_path / "target"),
        DBT_LOG_PATH=str(tmp_path / "logs"),
        DBT_PROFILES_DIR=str(PROJECT_DIR),
    )
    port = free_port()
    log = tmp_path / "dagster_dev.log"
    dagster = str(Path(sys.executable).parent / "dagster")
    with log.open("w") as out:
        server = subprocess.Popen(
            [dagster, "dev", "-h", "127.0.0.1", "-p", str(port)],  # as `make dev`
            cwd=PROJECT_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: webserver, daemon, code servers
        )  # fmt: skip
    try:
        yield port, server, log
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=30)
        # Children that outlived `dagster dev` (code servers) are in the same group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)


@pytest.mark.slow
def test_dagster_dev_serves_the_graph_schedule_and_sensor(dagster_dev):
    port, server, log = dagster_dev

    def asset_keys() -> set[str]:
        nodes = graphql(port, "{ assetNodes { assetKey { path } } }")["data"]["assetNodes"]
        return {"/".join(node["assetKey"]["path"]) for node in nodes}

    keys = wait_for("the asset graph", asset_keys, STARTUP_TIMEOUT_S, server, log)
    assert {
        "raw/orders",
        "raw/survey_responses",
        "staging/stg_shop__orders",
        "marts/customer_tiers",
        "marts/loyalty_balances",
        "marts/customer_predictions",
        "reports/tier_report",
    } <= keys

    repos = graphql(
        port,
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { "
        "schedules { name scheduleState { status } } sensors { name sensorState { status } } "
        "} } } }",
    )["data"]["repositoriesOrError"]["nodes"]
    schedules = {s["name"]: s["scheduleState"]["status"] for r in repos for s in r["schedules"]}
    sensors = {s["name"]: s["sensorState"]["status"] for r in repos for s in r["sensors"]}
    assert schedules == {"daily_refresh": "RUNNING"}
    assert sensors == {
        "new_survey_files": "RUNNING",
        "dead_run_cleanup": "RUNNING",
        "run_failure_alert": "RUNNING",
    }

    def daemons_healthy() -> bool:
        statuses = graphql(
            port,
            "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }",
        )["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
        needed = {s["daemonType"]: s["healthy"] for s in statuses if s["required"]}
        return {"SCHEDULER", "SENSOR"} <= set(needed) and all(needed.values())

    wait_for("healthy scheduler and sensor daemons", daemons_healthy, DAEMON_TIMEOUT_S, server, log)
    locations = graphql(
        port, "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
    )["data"]["workspaceOrError"]["locationEntries"]
    assert [entry["name"] for entry in locations] == ["customer_warehouse"]
    assert "127.0.0.1" in log.read_text()
