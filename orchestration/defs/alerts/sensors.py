"""``run_failure_alert``: every failed run of this code location becomes an alert
(``customer_warehouse.alerts``): one JSON line in ``CW_ALERT_LOG`` and, when
``CW_ALERT_WEBHOOK_URL`` is set, a POST of the same JSON.

The sensor only collects what the run's event log says -- the failed steps and their errors,
the assets those steps were to write and did not, the blocking checks that failed, how many
assets the run left untouched -- and hands it to ``alerts.format_alert`` / ``send_alert``. A
webhook that fails is logged in the sensor's tick log and in the alert log, never raised (a
raising sensor would retry the same run and post it again).

Sensors run in the daemon (``make dev``): runs started from the UI, the schedule, the survey
sensor, and ``make run`` while ``make dev`` serves the same ``DAGSTER_HOME`` are all alerted.
"""

from collections.abc import Iterable

import dagster as dg
from dagster._core.events import DagsterEventType

from customer_warehouse import alerts


def _step_error(event: dg.DagsterEvent) -> str:
    error = getattr(event.event_specific_data, "error", None)
    return "" if error is None else error.message


def failed_run_details(
    instance: dg.DagsterInstance, run_id: str, failed_steps: Iterable[str]
) -> tuple[list[str], list[str], int]:
    """(assets the failed steps planned and did not write, failed blocking checks as
    ``asset:check``, assets of the run not updated at all) from the run's event log."""
    failed_steps = set(failed_steps)
    planned: dict[dg.AssetKey, str | None] = {}
    written: set[dg.AssetKey] = set()
    checks: list[str] = []
    records = instance.get_records_for_run(
        run_id,
        of_type={
            DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
            DagsterEventType.ASSET_MATERIALIZATION,
            DagsterEventType.ASSET_CHECK_EVALUATION,
        },
        limit=1_000_000,
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
            planned[event.asset_key] = event.step_key
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            written.add(event.asset_key)
        else:
            evaluation = event.event_specific_data
            if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR:
                checks.append(f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}")
    failed_assets = [
        key.to_user_string()
        for key, step in planned.items()
        if step in failed_steps and key not in written
    ]
    return failed_assets, checks, sum(1 for key in planned if key not in written)


@dg.run_failure_sensor(
    name="run_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Write every failed run as a JSON line to CW_ALERT_LOG (default alerts.jsonl "
    "beside the warehouse file) and POST it to CW_ALERT_WEBHOOK_URL when set: the run, the "
    "failed steps, assets and checks, and the fix (the error's first line).",
)
def run_failure_alert(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    steps = [
        (event.step_key or "?", _step_error(event)) for event in context.get_step_failure_events()
    ]
    failed_assets, failed_checks, not_updated = failed_run_details(
        context.instance, run.run_id, [step for step, _ in steps]
    )
    alert = alerts.format_alert(
        run_id=run.run_id,
        job_name=run.job_name,
        failed_steps=steps,
        failed_assets=failed_assets,
        failed_checks=failed_checks,
        assets_not_updated=not_updated,
        run_error=context.failure_event.message,
    )
    destination = alerts.alert_destination()
    for problem in destination.problems:
        context.log.warning(f"Alert setting ignored: {problem}")
    failure = alerts.send_alert(alert, destination)
    context.log.info(f"Alert for run {run.run_id} written to {destination.log_path}")
    if failure is not None:
        context.log.warning(f"The alert webhook failed (the alert is in the log file): {failure}")
