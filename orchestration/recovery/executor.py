"""The job's executor (:data:`writer_pool_executor`): Dagster's in-process executor whose run
first cleans up dead runs and whose wait for the writer pool is bounded (:class:`BoundedPoolWait`).
Why: the docstring of :mod:`orchestration.recovery`.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator

import dagster as dg
from dagster._core.definitions.executor_definition import IN_PROC_CONFIG
from dagster._core.events import EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.execute_plan import inner_plan_execution_iterator
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.retries import RetryMode
from dagster._core.execution.step_dependency_config import StepDependencyConfig
from dagster._core.executor.in_process import InProcessExecutor

from customer_warehouse.config import ConfigError, parse_pool_wait_timeout
from orchestration.recovery.dead_runs import clean_up_dead_runs, pool_holders

#: While a step waits, the holders are named again this often (seconds).
REMIND_EVERY_S = 60.0


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
    cleanup and the bounded pool wait of ``orchestration/recovery/``."""
    config = init_context.executor_config
    return WriterPoolExecutor(
        retries=RetryMode.from_config(config["retries"]),
        step_dependency_config=StepDependencyConfig.from_config(
            config.get("step_dependency_config")
        ),
    )
