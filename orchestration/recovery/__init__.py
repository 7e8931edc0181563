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

The package, by concern:

* :mod:`orchestration.recovery.dead_runs`: processes, runs, the cleanup and the sensor;
* :mod:`orchestration.recovery.executor`: the bounded pool wait and the job's executor;
* :mod:`orchestration.recovery.cli`: ``python -m orchestration.recovery`` and setting a damaged
  warehouse file aside.

Every public name is importable from here.
"""

from orchestration.recovery.cli import WarehouseInUse, main, set_aside_warehouse
from orchestration.recovery.dead_runs import (
    CLEANUP_INTERVAL_S,
    LIVE_STATUSES,
    START_TIME_SLACK_S,
    RunProcess,
    clean_up_dead_runs,
    dead_run_cleanup,
    pool_holders,
    process_alive,
    process_start_time,
    run_process,
)
from orchestration.recovery.executor import (
    REMIND_EVERY_S,
    BoundedPoolWait,
    PoolWaitTimeout,
    WriterPoolExecutor,
    writer_pool_executor,
)

__all__ = [
    "CLEANUP_INTERVAL_S",
    "LIVE_STATUSES",
    "REMIND_EVERY_S",
    "START_TIME_SLACK_S",
    "BoundedPoolWait",
    "PoolWaitTimeout",
    "RunProcess",
    "WarehouseInUse",
    "WriterPoolExecutor",
    "clean_up_dead_runs",
    "dead_run_cleanup",
    "main",
    "pool_holders",
    "process_alive",
    "process_start_time",
    "run_process",
    "set_aside_warehouse",
    "writer_pool_executor",
]
