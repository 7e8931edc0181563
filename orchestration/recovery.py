"""Crashed runs never block the next one; a run that must wait for the writer pool says for whom,
sleeps, and gives up after ``CW_POOL_WAIT_TIMEOUT``.

The problem (Dagster 1.13, reproduced in docs/orchestration.md, "Crashes and reruns"):

* A step claims a slot of the pool ``duckdb_writer`` in the instance storage and frees it when
  the step ends. A run process killed with SIGKILL (or out of memory, or a lost machine) frees
  nothing and stays ``STARTED`` for ever: Dagster frees slots only of *finished* runs (run
  monitoring's ``free_slots_after_run_end_seconds``), and nothing marks the dead run finished --
  ``dagster job execute`` has no daemon, and the default run launcher of ``dagster dev`` cannot
  check a run worker's health. Every later run waits for that slot for ever.
* While a step waits for a pool, Dagster's in-process loop never sleeps:
  ``InstanceConcurrencyContext.interval_to_next_pending_claim_check`` returns
  ``min([0, *intervals])``, never positive, so ``ActiveExecution.sleep_til_ready`` returns at
  once and the loop spins a core.

What this module does, for every run of the job (``make run``, the schedule, the sensor, the UI):
the job's executor (:data:`writer_pool_executor`, Dagster's in-process executor with one part
replaced) first cleans up runs whose process is gone (:func:`clean_up_dead_runs`: marks them
failed, frees their slots, and logs what it did), then waits for the pool with
:class:`BoundedPoolWait`: it sleeps until the next claim check, names the run that holds the
pool, cleans that run up if its process died meanwhile, and fails the run with
:class:`PoolWaitTimeout` after ``CW_POOL_WAIT_TIMEOUT`` seconds of waiting.
Under ``make dev`` that is not enough: the daemon's run queue does not start a queued run while
the pool's slots are held ("blocked by global concurrency limits"), so a dead holder would keep
every scheduled and sensor run queued for ever, and no executor would ever run. The sensor
:data:`dead_run_cleanup` does the same cleanup every 30 seconds. ``python -m
orchestration.recovery`` does it once (``make dev`` runs it before the daemon starts); with
``--set-aside-warehouse`` it also moves a damaged warehouse file aside (``make rebuild``).

A run's process is identified by the pid in its engine events ("Executing steps in process (pid:
N)"), and is alive when a process with that pid exists and started before the run said so (a
pid reused after a reboot is not the run). The instance lives in the local ``DAGSTER_HOME``, so
every run's process is on this machine.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from dagster._core.definitions.executor_definition import IN_PROC_CONFIG
from dagster._core.events import DagsterEventType, EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.execute_plan import inner_plan_execution_iterator
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.retries import RetryMode
from dagster._core.execution.step_dependency_config import StepDependencyConfig
from dagster._core.executor.in_process import InProcessExecutor
from dagster._core.storage.dagster_run import FINISHED_STATUSES

from customer_warehouse.config import ConfigError, load_settings, parse_pool_wait_timeout

#: Run statuses whose process should exist (a dead one holds its slots for ever).
LIVE_STATUSES = (
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)
#: While a step waits, the holders are named again this often (seconds).
REMIND_EVERY_S = 60.0
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
            run, f"Marked failed by the dead-run cleanup (orchestration/recovery.py): {why}."
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


# --- the bounded wait ----------------------------------------------------------------------


class PoolWaitTimeout(Exception):
    """A step waited for its pool longer than CW_POOL_WAIT_TIMEOUT; the message names the holder."""


class BoundedPoolWait(InstanceConcurrencyContext):
    """Dagster's claim bookkeeping, with a wait that sleeps, names the holder and ends.

    Dagster re-checks a blocked claim after 1 s, then 10 % longer each time up to 15 s; in
    between, :meth:`interval_to_next_pending_claim_check` lets the executor sleep. At each
    re-check the runs holding the pool are looked at: a holder whose process is gone is cleaned
    up (its slot goes to the waiting step at once), a live one is named when the wait starts
    and every :data:`REMIND_EVERY_S` seconds. A step that waited ``timeout_s`` fails the run.
    """

    def __init__(
        self,
        instance: dg.DagsterInstance,
        dagster_run: dg.DagsterRun,
        *,
        timeout_s: float,
        log: Callable[[str], None],
    ):
        super().__init__(instance, dagster_run)
        self._timeout_s = timeout_s
        self._say = log
        self._waiting_since: dict[str, float] = {}
        self._said_at: dict[str, float] = {}

    def claim(self, concurrency_key: str, step_key: str, step_priority: int = 0) -> bool:
        pending = step_key in self._pending_claims
        if pending and time.time() <= self._pending_timeouts.get(step_key, 0.0):
            return False  # not yet time to ask the storage again
        if super().claim(concurrency_key, step_key, step_priority):
            since = self._waiting_since.pop(step_key, None)
            if since is not None:
                self._say(
                    f"Step {step_key} got pool {concurrency_key} after waiting "
                    f"{time.monotonic() - since:.0f} s."
                )
            return True
        self._after_blocked_check(concurrency_key, step_key)
        return False

    def _after_blocked_check(self, pool: str, step_key: str) -> None:
        now = time.monotonic()
        since = self._waiting_since.setdefault(step_key, now)
        holders = pool_holders(self._instance, pool, except_run=self._run_id)
        cleaned = clean_up_dead_runs(self._instance, run_ids=[h.run_id for h in holders])
        for message in cleaned:
            self._say(message)
        if cleaned:
            self._pending_timeouts[step_key] = 0.0  # ask again at once: the slot is free now
            return
        waited = now - since
        who = "; ".join(holder.label for holder in holders) or "no run (slots being reassigned)"
        if waited >= self._timeout_s:
            raise PoolWaitTimeout(
                f"Gave up after waiting {waited:.0f} s (CW_POOL_WAIT_TIMEOUT="
                f"{self._timeout_s:g}) for pool {pool}: step {step_key} of this run could not "
                f"start because {who} holds the pool and is still running. Let that run finish "
                "(or terminate it in the UI) and start this one again, or raise "
                "CW_POOL_WAIT_TIMEOUT."
            )
        if now - self._said_at.get(step_key, -REMIND_EVERY_S) >= REMIND_EVERY_S:
            self._said_at[step_key] = now
            self._say(
                f"Step {step_key} waits for pool {pool}, held by {who}; waited {waited:.0f} s, "
                f"gives up after {self._timeout_s:g} s (CW_POOL_WAIT_TIMEOUT)."
            )

    def interval_to_next_pending_claim_check(self) -> float:
        """Seconds until the next blocked claim is due: never negative, so the loop sleeps.
        (Dagster 1.13 returns ``min(0, ...)``, always <= 0, and the loop spins.)"""
        if not self._pending_claims:
            return 0.0
        now = time.time()
        due = [self._pending_timeouts.get(step, 0.0) - now for step in self._pending_claims]
        return max(0.0, min(due))


# --- the executor --------------------------------------------------------------------------


def _bounded_wait_iterator(
    job_context, execution_plan, _unused_context=None, *, timeout_s: float
) -> Iterator[dg.DagsterEvent]:
    with BoundedPoolWait(
        job_context.instance,
        job_context.dagster_run,
        timeout_s=timeout_s,
        log=job_context.log.warning,
    ) as concurrency_context:
        yield from inner_plan_execution_iterator(job_context, execution_plan, concurrency_context)


class WriterPoolExecutor(InProcessExecutor):
    """Dagster's in-process executor (one process, steps one after another) whose run first
    cleans up dead runs and whose pool waits are bounded (:class:`BoundedPoolWait`).

    ``execute`` follows ``InProcessExecutor.execute`` of Dagster 1.13 with two changes: the
    cleanup before the first step, and the concurrency context (the iterator).
    """

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        try:
            timeout_s = parse_pool_wait_timeout(os.environ.get("CW_POOL_WAIT_TIMEOUT"))
        except ConfigError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        for message in clean_up_dead_runs(plan_context.instance):
            plan_context.log.warning(message)
        step_keys = execution_plan.step_keys_to_execute
        yield dg.DagsterEvent.engine_event(
            plan_context,
            f"Executing steps in process (pid: {os.getpid()})",
            event_specific_data=EngineEventData.in_process(os.getpid(), step_keys),
        )
        started = time.perf_counter()
        yield from iter(
            ExecuteRunWithPlanIterable(
                execution_plan=plan_context.execution_plan,
                iterator=functools.partial(_bounded_wait_iterator, timeout_s=timeout_s),
                execution_context_manager=PlanExecutionContextManager(
                    job=plan_context.job,
                    retry_mode=plan_context.retry_mode,
                    execution_plan=plan_context.execution_plan,
                    run_config=plan_context.run_config,
                    dagster_run=plan_context.dagster_run,
                    instance=plan_context.instance,
                    raise_on_error=plan_context.raise_on_error,
                    output_capture=plan_context.output_capture,
                    step_dependency_config=self.step_dependency_config,
                ),
            )
        )
        yield dg.DagsterEvent.engine_event(
            plan_context,
            f"Finished steps in process (pid: {os.getpid()}) in "
            f"{time.perf_counter() - started:.1f} s",
            event_specific_data=EngineEventData.in_process(os.getpid(), step_keys),
        )


@dg.executor(name="in_process", config_schema=IN_PROC_CONFIG)
def writer_pool_executor(init_context: dg.InitExecutorContext) -> WriterPoolExecutor:
    """In-process execution (as ``dg.in_process_executor``, same config) with the dead-run
    cleanup and the bounded pool wait of ``orchestration/recovery.py``."""
    config = init_context.executor_config
    return WriterPoolExecutor(
        retries=RetryMode.from_config(config["retries"]),
        step_dependency_config=StepDependencyConfig.from_config(
            config.get("step_dependency_config")
        ),
    )


# --- the daemon ---------------------------------------------------------------------------

#: How often the daemon looks for dead runs (seconds).
CLEANUP_INTERVAL_S = 30


@dg.sensor(
    name="dead_run_cleanup",
    minimum_interval_seconds=CLEANUP_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 30 s: runs whose process is gone are marked failed and their writer-pool "
    "slots freed (orchestration/recovery.py). Under the daemon a queued run does not even "
    "start while a pool slot is held, so a dead run would block the schedule and the sensor for "
    "ever. Starts no run.",
)
def dead_run_cleanup(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    messages = clean_up_dead_runs(context.instance)
    for message in messages:
        context.log.warning(message)
    return dg.SkipReason(" ".join(messages) if messages else "No dead runs.")


# --- a damaged warehouse file --------------------------------------------------------------


class WarehouseInUse(RuntimeError):
    """Another process has the warehouse file open; it must not be moved under it."""


def set_aside_warehouse(path: Path, *, now: datetime | None = None) -> list[Path]:
    """Rename the warehouse file (and its write-ahead log) to ``<name>.corrupt-<UTC time>``,
    so the next run builds a new one from the raw files. Nothing is deleted.

    Refuses (:class:`WarehouseInUse`) while another process holds DuckDB's lock on the file:
    a run writing it would go on writing the renamed file. Returns the new paths (none when
    there was no file).
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    if path.exists():
        with path.open("rb+") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise WarehouseInUse(
                    f"{path} is open in another process (a run, a DuckDB shell, a BI tool "
                    "reading it directly): close it or let the run finish, then rebuild."
                ) from None
            fcntl.lockf(handle, fcntl.LOCK_UN)
    moved = []
    for source in (path, path.with_name(path.name + ".wal")):
        if source.exists():
            target = source.with_name(f"{source.name}.corrupt-{stamp}")
            source.rename(target)
            moved.append(target)
    return moved


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m orchestration.recovery``: clean up the dead runs of $DAGSTER_HOME now;
    with ``--set-aside-warehouse`` move the warehouse file aside first (``make rebuild``)."""
    parser = argparse.ArgumentParser(prog="python -m orchestration.recovery")
    parser.add_argument(
        "--set-aside-warehouse",
        action="store_true",
        help="rename CW_WAREHOUSE_PATH (and its .wal) to <name>.corrupt-<UTC time>",
    )
    args = parser.parse_args(argv)
    with dg.DagsterInstance.get() as instance:
        messages = clean_up_dead_runs(instance)
    for message in messages:
        print(message)
    if not messages:
        print("No dead runs to clean up.")
    if args.set_aside_warehouse:
        try:
            path = load_settings(require_raw_dir=False).warehouse_path
            moved = set_aside_warehouse(path)
        except (ConfigError, WarehouseInUse) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for target in moved:
            print(f"Moved {target.name.split('.corrupt-')[0]} aside to {target} (kept).")
        if not moved:
            print(f"No warehouse file at {path}: the run builds it from the raw files.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
