"""Crashes and reruns (docs/orchestration.md, "Crashes and reruns"): dead runs and the writer pool.

* A run's process that died is told from a live one (pid gone, zombie, or reused).
* A dead run's writer-pool slot is freed by the next run, which says so; a step waiting for a
  live run's slot sleeps (no spinning core), names that run, and gives up after
  CW_POOL_WAIT_TIMEOUT with an error naming it; a holder that dies meanwhile is cleaned up.

Kill-safe writers and real runs killed are in tests/test_crash_recovery.py."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

from customer_warehouse.config import (
    DEFAULT_POOL_WAIT_TIMEOUT_S,
    ConfigError,
    load_settings,
    parse_pool_wait_timeout,
)
from orchestration.defs.resources import WRITER_POOL
from orchestration.recovery import (
    BoundedPoolWait,
    PoolWaitTimeout,
    clean_up_dead_runs,
    dead_run_cleanup,
    process_alive,
)

from .conftest import PROJECT_DIR
from .crash_harness import started_run

# --- processes --------------------------------------------------------------------------------


def test_a_live_process_is_alive_a_reaped_or_reused_pid_is_not():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert process_alive(sleeper.pid, time.time())
        # Seen an hour before this process started: the pid now belongs to another program.
        assert not process_alive(sleeper.pid, time.time() - 3600)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not process_alive(sleeper.pid, time.time())


def test_a_killed_but_unreaped_process_counts_as_gone():
    zombie = subprocess.Popen(["sleep", "30"])
    zombie.kill()
    time.sleep(0.3)  # dead, not yet waited for: a zombie
    try:
        assert not process_alive(zombie.pid, time.time())
    finally:
        zombie.wait()


# --- the setting --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, DEFAULT_POOL_WAIT_TIMEOUT_S), ("", DEFAULT_POOL_WAIT_TIMEOUT_S), ("90", 90.0)],
)
def test_pool_wait_timeout_is_seconds_with_a_default(value, seconds):
    assert parse_pool_wait_timeout(value) == seconds


@pytest.mark.parametrize("value", ["0", "-5", "ten", "nan", "inf", "1e9", "30;drop"])
def test_an_invalid_pool_wait_timeout_names_the_variable(value, tmp_path):
    with pytest.raises(ConfigError, match="CW_POOL_WAIT_TIMEOUT"):
        parse_pool_wait_timeout(value)
    env = {"CW_RAW_DIR": str(tmp_path), "CW_POOL_WAIT_TIMEOUT": value}
    with pytest.raises(ConfigError, match="CW_POOL_WAIT_TIMEOUT"):
        load_settings(env)


# --- the writer pool in a real instance -----------------------------------------------------


@pytest.fixture
def instance(tmp_path) -> Iterator[dg.DagsterInstance]:
    """A real (SQLite) instance with the project's dagster.yaml: pool limit 1."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_DIR / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as inst:
        inst.event_log_storage.set_concurrency_slots(WRITER_POOL, 1)
        yield inst


def _claimed(instance: dg.DagsterInstance) -> list[tuple[str, str]]:
    info = instance.event_log_storage.get_concurrency_info(WRITER_POOL)
    return [(slot.run_id, slot.step_key) for slot in info.claimed_slots]


@pytest.fixture
def live_process() -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(["sleep", "120"])
    yield process
    process.kill()
    process.wait()


def test_a_dead_runs_slot_is_freed_and_the_cleanup_says_so(instance, dead_pid, live_process):
    dead = started_run(instance, dead_pid)
    alive = started_run(instance, live_process.pid)
    storage = instance.event_log_storage
    assert storage.claim_concurrency_slot(WRITER_POOL, dead.run_id, "dbt_models").is_claimed

    messages = clean_up_dead_runs(instance)

    assert len(messages) == 1, messages
    assert dead.run_id in messages[0]
    assert f"pid {dead_pid}" in messages[0]
    assert f"freed 1 slot(s) of pool {WRITER_POOL}" in messages[0]
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED
    assert _claimed(instance) == []
    assert clean_up_dead_runs(instance) == []  # nothing left to do


def test_a_finished_run_that_kept_its_slot_is_freed(instance, dead_pid):
    run = started_run(instance, dead_pid)
    instance.event_log_storage.claim_concurrency_slot(WRITER_POOL, run.run_id, "loyalty_points")
    instance.report_run_failed(run, "terminated in the UI")  # Dagster does not free the slot

    messages = clean_up_dead_runs(instance)

    assert _claimed(instance) == []
    assert any(run.run_id in m and "without releasing its slots" in m for m in messages)


def test_the_daemons_sensor_cleans_up_dead_runs_and_starts_nothing(instance, dead_pid):
    dead = started_run(instance, dead_pid)
    instance.event_log_storage.claim_concurrency_slot(WRITER_POOL, dead.run_id, "raw_files")

    tick = dead_run_cleanup.evaluate_tick(dg.build_sensor_context(instance=instance))

    assert tick.run_requests == []
    assert tick.skip_message.startswith(f"Cleaned up run {dead.run_id}")
    assert _claimed(instance) == []
    quiet = dead_run_cleanup.evaluate_tick(dg.build_sensor_context(instance=instance))
    assert quiet.skip_message == "No dead runs."


def _wait_for_pool(context: BoundedPoolWait, step: str, deadline: float) -> bool:
    """What Dagster's in-process loop does: claim, else sleep the interval it is given."""
    while time.monotonic() < deadline:
        if context.claim(WRITER_POOL, step):
            return True
        time.sleep(context.interval_to_next_pending_claim_check())
    return False


def test_a_waiting_step_sleeps_names_the_holder_and_gives_up(instance, live_process):
    holder = started_run(instance, live_process.pid)
    instance.event_log_storage.claim_concurrency_slot(WRITER_POOL, holder.run_id, "dbt_models")
    waiting = started_run(instance, live_process.pid)
    said: list[str] = []
    timeout = 4.0

    with BoundedPoolWait(instance, waiting, timeout_s=timeout, log=said.append) as context:
        cpu, wall = time.process_time(), time.monotonic()
        with pytest.raises(PoolWaitTimeout) as failure:
            _wait_for_pool(context, "raw_files", time.monotonic() + 60)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall

    assert timeout <= wall < timeout + 20
    assert cpu < 0.25 * wall, f"the wait used {cpu:.1f} s of CPU in {wall:.1f} s"
    error = str(failure.value)
    assert holder.run_id in error and f"pid {live_process.pid}" in error
    assert "CW_POOL_WAIT_TIMEOUT" in error
    assert said and holder.run_id in said[0] and "waits for pool" in said[0]
    assert _claimed(instance) == [(holder.run_id, "dbt_models")]  # the holder keeps its slot


def test_a_holder_that_dies_while_a_step_waits_is_cleaned_up(instance, live_process):
    holder = started_run(instance, live_process.pid)
    instance.event_log_storage.claim_concurrency_slot(WRITER_POOL, holder.run_id, "dbt_models")
    waiting = started_run(instance, live_process.pid)
    said: list[str] = []

    with BoundedPoolWait(instance, waiting, timeout_s=60, log=said.append) as context:
        assert not context.claim(WRITER_POOL, "raw_files")
        live_process.kill()
        live_process.wait()
        assert _wait_for_pool(context, "raw_files", time.monotonic() + 30)

    assert instance.get_run_by_id(holder.run_id).status == dg.DagsterRunStatus.FAILURE
    assert any(m.startswith(f"Cleaned up run {holder.run_id}") for m in said), said
    assert _claimed(instance) == [(waiting.run_id, "raw_files")]


def test_dagster_alone_would_spin_while_a_step_waits(instance, live_process):
    """Why BoundedPoolWait replaces the interval: Dagster's is never positive. When this fails,
    Dagster fixed it upstream and the override in orchestration/recovery/executor.py can go."""
    holder = started_run(instance, live_process.pid)
    instance.event_log_storage.claim_concurrency_slot(WRITER_POOL, holder.run_id, "dbt_models")
    waiting = started_run(instance, live_process.pid)
    with InstanceConcurrencyContext(instance, waiting) as stock:
        assert not stock.claim(WRITER_POOL, "raw_files")
        assert stock.interval_to_next_pending_claim_check() <= 0
    with BoundedPoolWait(instance, waiting, timeout_s=60, log=lambda _: None) as ours:
        assert not ours.claim(WRITER_POOL, "survey_files")
        assert ours.interval_to_next_pending_claim_check() > 0
