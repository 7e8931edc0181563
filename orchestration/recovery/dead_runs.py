"""Dead runs: find runs whose process is gone, mark them failed and free their pool slots
(:func:`clean_up_dead_runs`); the sensor :data:`dead_run_cleanup` does it every 30 s under the
daemon. Why and how: the docstring of :mod:`orchestration.recovery`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.storage.dagster_run import FINISHED_STATUSES

#: Run statuses whose process should exist (a dead one holds its slots for ever).
LIVE_STATUSES = (
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)
#: A process that started this long after its run recorded the pid is another program (the pid
#: was reused, after a reboot typically). Generous: /proc start times are rounded (boot time in
#: whole seconds) and move with wall-clock corrections; wrongly calling a live run dead would
#: let two runs write at once (DuckDB's file lock still stops the second writer).
START_TIME_SLACK_S = 60.0


# --- processes (no Dagster) ----------------------------------------------------------------


def process_start_time(pid: int, proc: Path = Path("/proc")) -> float | None:
    """When process ``pid`` started (epoch seconds), or None if there is no such live process
    (a zombie, killed but not yet reaped, counts as gone). Linux ``/proc`` only."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in (proc / "stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    state, start_ticks = fields[0], int(fields[19])
    if state in ("Z", "X"):
        return None
    return boot + start_ticks / os.sysconf("SC_CLK_TCK")


def process_alive(pid: int, seen_at: float | None = None, proc: Path = Path("/proc")) -> bool:
    """Whether the process that was ``pid`` at epoch time ``seen_at`` still runs.

    A process with that pid that started after ``seen_at`` (by more than
    :data:`START_TIME_SLACK_S`) is another program: pids are reused, after a reboot certainly.
    Without ``/proc`` (not Linux) only the pid's existence is checked.
    """
    if pid <= 0:
        return False
    if proc.is_dir():
        started = process_start_time(pid, proc)
        if started is None:
            return False
        return seen_at is None or started <= seen_at + START_TIME_SLACK_S
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "an unknown time"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- runs in the instance ------------------------------------------------------------------


@dataclass(frozen=True)
class RunProcess:
    """What the event log says about a run's process: its pid and when it was last heard of."""

    run_id: str
    job_name: str
    status: str
    pid: int | None
    pid_seen_at: float | None
    last_event_at: float | None
    last_step: str | None

    @property
    def label(self) -> str:
        where = f", step {self.last_step}" if self.last_step else ""
        pid = f"pid {self.pid}" if self.pid else "no pid recorded"
        return f"run {self.run_id} ({self.job_name}, {pid}{where})"


def run_process(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunProcess:
    """The latest pid the run's engine events recorded, its last event and its last step."""
    pid = pid_seen_at = None
    for record in instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.ENGINE_EVENT, ascending=False, limit=50
    ).records:
        data = record.event_log_entry.dagster_event.engine_event_data
        value = data.metadata.get("pid") if data and data.metadata else None
        if value is not None:
            pid, pid_seen_at = int(value.value), record.event_log_entry.timestamp
            break
    last = instance.get_records_for_run(run.run_id, ascending=False, limit=1).records
    steps = instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.STEP_START, ascending=False, limit=1
    ).records
    return RunProcess(
        run_id=run.run_id,
        job_name=run.job_name,
        status=run.status.value,
        pid=pid,
        pid_seen_at=pid_seen_at,
        last_event_at=last[0].event_log_entry.timestamp if last else None,
        last_step=steps[0].event_log_entry.step_key if steps else None,
    )


def _slots_held(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    """{pool: slots claimed or assigned} of one run, over every pool of the instance."""
    storage = instance.event_log_storage
    held: dict[str, int] = {}
    for key, info in storage.get_concurrency_infos(list(storage.get_concurrency_keys())).items():
        claimed = sum(slot.run_id == run_id for slot in info.claimed_slots)
        assigned = sum(
            step.run_id == run_id and step.assigned_timestamp is not None
            for step in info.pending_steps
        )
        if claimed or assigned:
            held[key] = max(claimed, assigned)
    return held


def _pools_text(held: dict[str, int]) -> str:
    if not held:
        return "it held no pool slot"
    return "freed " + ", ".join(f"{n} slot(s) of pool {pool}" for pool, n in sorted(held.items()))


def clean_up_dead_runs(
    instance: dg.DagsterInstance,
    *,
    run_ids: Iterable[str] | None = None,
    alive: Callable[[int, float | None], bool] = process_alive,
) -> list[str]:
    """Mark runs whose process is gone as failed and free their pool slots; say what was done.

    Looks at the runs in ``run_ids`` (default: every run that is starting, started or canceling)
    and at finished runs that still hold slots or queue for one. A run with no pid recorded is
    left alone: it died before it could claim anything (run monitoring's start timeout fails it
    under ``make dev``). Returns one sentence per run cleaned up.
    """
    if not instance.event_log_storage.supports_global_concurrency_limits:
        return []
    wanted = set(run_ids) if run_ids is not None else None
    if wanted is not None and not wanted:
        return []
    live = dg.RunsFilter(
        statuses=list(LIVE_STATUSES), run_ids=sorted(wanted) if wanted is not None else None
    )
    messages: list[str] = []
    own_pid = os.getpid()
    for record in instance.get_run_records(filters=live):
        run = record.dagster_run
        process = run_process(instance, run)
        if process.pid is None or process.pid == own_pid:
            continue
        if alive(process.pid, process.pid_seen_at):
            continue
        held = _slots_held(instance, run.run_id)
        why = (
            f"its process (pid {process.pid}) is gone; last heard of at "
            f"{_when(process.last_event_at)}"
            + (f" in step {process.last_step}" if process.last_step else "")
        )
        instance.report_run_failed(
            run, f"Marked failed by the dead-run cleanup (orchestration/recovery/): {why}."
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        messages.append(
            f"Cleaned up run {run.run_id} ({run.job_name}): {why}. Marked it failed; "
            f"{_pools_text(held)}."
        )
    messages += _free_slots_of_finished_runs(instance, wanted)
    return messages


def _free_slots_of_finished_runs(instance: dg.DagsterInstance, wanted: set[str] | None) -> list:
    """Finished runs (e.g. a dead run failed by hand in the UI) whose slots were never freed:
    without the daemon's run monitoring nothing frees them."""
    storage = instance.event_log_storage
    holders = set(storage.get_concurrency_run_ids())
    for info in storage.get_concurrency_infos(list(storage.get_concurrency_keys())).values():
        holders.update(slot.run_id for slot in info.claimed_slots)
    if wanted is not None:
        holders &= wanted
    if not holders:
        return []
    messages = []
    finished = dg.RunsFilter(run_ids=sorted(holders), statuses=list(FINISHED_STATUSES))
    for record in instance.get_run_records(filters=finished):
        run = record.dagster_run
        held = _slots_held(instance, run.run_id)
        storage.free_concurrency_slots_for_run(run.run_id)
        if held:
            messages.append(
                f"Cleaned up run {run.run_id} ({run.job_name}): it ended ({run.status.value}) "
                f"without releasing its slots; {_pools_text(held)}."
            )
    # Runs deleted from the history, whose slots stayed behind.
    in_history = dg.RunsFilter(run_ids=sorted(holders))
    known = {r.dagster_run.run_id for r in instance.get_run_records(filters=in_history)}
    for run_id in sorted(holders - known):
        held = _slots_held(instance, run_id)
        storage.free_concurrency_slots_for_run(run_id)
        if held:
            messages.append(
                f"Cleaned up run {run_id}: it is not in the run history any more; "
                f"{_pools_text(held)}."
            )
    return messages


def pool_holders(instance: dg.DagsterInstance, pool: str, *, except_run: str) -> list[RunProcess]:
    """The other runs that hold (claimed or are assigned) a slot of ``pool``."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    run_ids = {slot.run_id for slot in info.claimed_slots}
    run_ids |= {step.run_id for step in info.pending_steps if step.assigned_timestamp}
    run_ids.discard(except_run)
    holders = []
    for run_id in sorted(run_ids):
        run = instance.get_run_by_id(run_id)
        if run is not None:
            holders.append(run_process(instance, run))
    return holders


# --- the daemon ---------------------------------------------------------------------------

#: How often the daemon looks for dead runs (seconds).
CLEANUP_INTERVAL_S = 30


@dg.sensor(
    name="dead_run_cleanup",
    minimum_interval_seconds=CLEANUP_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 30 s: runs whose process is gone are marked failed and their writer-pool "
    "slots freed (orchestration/recovery/). Under the daemon a queued run does not even "
    "start while a pool slot is held, so a dead run would block the schedule and the sensor for "
    "ever. Starts no run.",
)
def dead_run_cleanup(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    messages = clean_up_dead_runs(context.instance)
    for message in messages:
        context.log.warning(message)
    return dg.SkipReason(" ".join(messages) if messages else "No dead runs.")
