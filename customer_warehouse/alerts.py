"""Alerts for failed runs: one JSON line in a log file and, when configured, a webhook POST.

What an alert says (``format_alert``), as one JSON object::

    {"alert": "run_failed", "occurred_at": "2026-11-29T06:00:41+00:00",
     "run_id": "...", "job_name": "full_refresh",
     "failed_steps": [{"step": "raw_files", "error": "Loading the raw files of ... failed: ..."}],
     "failed_assets": ["raw/orders", ...], "failed_checks": ["staging/stg_x:unique_id"],
     "assets_not_updated": 57,
     "fix": "<the first line of the first failed step's error>",
     "summary": "Run 1a2b3c4d of full_refresh failed in raw_files: <fix>"}

``fix`` is the error's own first line, without the exception's class name: every error of this
project names what to do there (the variable and its fix, the file and how to re-export it,
``make rebuild``), so the alert carries it instead of a generic "see the logs".
``failed_assets`` are the assets the failed steps were to write and did not;
``failed_checks`` the blocking checks that failed (``asset:check``); ``assets_not_updated``
counts every asset of the run left as it was (the steps after the failure did not run).

Where it goes (``alert_destination``): appended as one line to ``CW_ALERT_LOG`` (default
``alerts.jsonl`` beside the warehouse file; created owner-only) and, when
``CW_ALERT_WEBHOOK_URL`` is set, POSTed as ``application/json`` with a short timeout
(``post_alert``). A webhook that fails (refused, timed out, an HTTP error) is reported back as
text and written to the log as a second line (``"alert": "webhook_failed"``), never raised: the
alert is already in the log. An invalid alert setting does not lose the alert either: it goes
to the default log with the setting's problem in ``settings_problems`` (the run may well have
failed because of that very setting).

Nothing here imports Dagster: the run-failure sensor (``orchestration/defs/alerts``) collects
the failed run's steps, assets and checks and calls these functions.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from customer_warehouse.config import (
    ALERT_LOG_NAME,
    ALERT_LOG_VARIABLE,
    ALERT_WEBHOOK_VARIABLE,
    DEFAULT_WAREHOUSE_PATH,
    ConfigError,
    parse_alert_log,
    parse_webhook_url,
)

#: Seconds a webhook may take before the POST counts as failed (the sensor waits for it).
WEBHOOK_TIMEOUT_S = 5.0
#: At most this many failed assets are named (a failed dbt step can leave hundreds).
MAX_NAMED_ASSETS = 50
#: "package.module.SomeError: text" → "text" (the class name is noise in an alert).
_EXCEPTION_PREFIX = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Failure|Timeout|Interrupt)\w*: ")


def first_line(text: str | None) -> str:
    """The first non-empty line of an error message, without a leading exception class."""
    for line in (text or "").splitlines():
        line = line.strip()
        if line:
            return _EXCEPTION_PREFIX.sub("", line, count=1)
    return ""


def format_alert(
    *,
    run_id: str,
    job_name: str,
    failed_steps: Sequence[tuple[str, str]],
    failed_assets: Sequence[str] = (),
    failed_checks: Sequence[str] = (),
    assets_not_updated: int = 0,
    run_error: str | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """The alert of a failed run (see the module docstring). ``failed_steps`` are
    ``(step key, error message)``; ``run_error`` is the run's own failure message, used as the
    fix when no step failed (a run that failed before its first step)."""
    steps = [{"step": step, "error": first_line(error)} for step, error in failed_steps]
    fix = next((s["error"] for s in steps if s["error"]), "") or first_line(run_error)
    assets = sorted(set(failed_assets))
    where = ", ".join(s["step"] for s in steps) or "the run itself (before any step)"
    alert: dict[str, Any] = {
        "alert": "run_failed",
        "occurred_at": (occurred_at or datetime.now(UTC)).astimezone(UTC).isoformat(),
        "run_id": run_id,
        "job_name": job_name,
        "failed_steps": steps,
        "failed_assets": assets[:MAX_NAMED_ASSETS],
        "failed_checks": sorted(set(failed_checks)),
        "assets_not_updated": int(assets_not_updated),
        "fix": fix or "no error message: open the run in the Dagster UI",
        "summary": f"Run {run_id[:8]} of {job_name} failed in {where}: {fix or 'no error message'}",
    }
    if len(assets) > MAX_NAMED_ASSETS:
        alert["failed_assets_omitted"] = len(assets) - MAX_NAMED_ASSETS
    return alert


def alert_line(alert: Mapping[str, Any]) -> str:
    """One line of JSON (line breaks inside values are escaped by JSON itself)."""
    return json.dumps(alert, sort_keys=True, ensure_ascii=False, default=str)


@dataclass(frozen=True)
class Destination:
    """Where alerts go; ``problems`` are alert settings that were invalid and ignored."""

    log_path: Path
    webhook_url: str | None = None
    problems: tuple[str, ...] = field(default=())


def alert_destination(environ: Mapping[str, str] | None = None) -> Destination:
    """``CW_ALERT_LOG`` / ``CW_ALERT_WEBHOOK_URL`` (and ``CW_WAREHOUSE_PATH`` for the default
    log), each checked on its own: an invalid one is replaced by its default and named in
    ``problems`` instead of stopping the alert."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    warehouse_value = env.get("CW_WAREHOUSE_PATH", "").strip()
    warehouse = (
        Path(warehouse_value).expanduser().resolve() if warehouse_value else DEFAULT_WAREHOUSE_PATH
    )
    default_log = warehouse.parent / ALERT_LOG_NAME
    if not default_log.parent.is_dir():
        default_log = DEFAULT_WAREHOUSE_PATH.parent / ALERT_LOG_NAME
    try:
        log_path = parse_alert_log(env.get(ALERT_LOG_VARIABLE), warehouse) or default_log
    except ConfigError as exc:
        problems.append(str(exc))
        log_path = default_log
    try:
        url = parse_webhook_url(env.get(ALERT_WEBHOOK_VARIABLE))
    except ConfigError as exc:
        problems.append(str(exc))
        url = None
    return Destination(log_path=log_path, webhook_url=url, problems=tuple(problems))


def write_alert(path: Path, alert: Mapping[str, Any]) -> Path:
    """Append the alert as one line to ``path`` (created owner-only, with its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (alert_line(alert) + "\n").encode("utf-8")
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, data)  # one write: lines of concurrent writers do not interleave
    finally:
        os.close(descriptor)
    return path


def post_alert(
    url: str, alert: Mapping[str, Any], timeout: float = WEBHOOK_TIMEOUT_S
) -> str | None:
    """POST the alert as JSON; None when the receiver answered 2xx, else what went wrong.
    Never raises for the webhook's own failures (refused, timeout, HTTP error, bad reply)."""
    request = urllib.request.Request(
        url,
        data=alert_line(alert).encode("utf-8"),
        headers={"Content-Type": "application/json", "User-Agent": "customer-warehouse-alerts"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        return f"{url} answered HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{url} could not be reached: {reason}"
    if not 200 <= status < 300:
        return f"{url} answered HTTP {status}"
    return None


def send_alert(
    alert: Mapping[str, Any], destination: Destination, timeout: float = WEBHOOK_TIMEOUT_S
) -> str | None:
    """Write the alert (with the destination's setting problems) to the log, then POST it when
    a webhook is configured. Returns the webhook's failure (also logged as a second line)."""
    alert = dict(alert)
    if destination.problems:
        alert["settings_problems"] = list(destination.problems)
    write_alert(destination.log_path, alert)
    if destination.webhook_url is None:
        return None
    failure = post_alert(destination.webhook_url, alert, timeout)
    if failure is not None:
        write_alert(
            destination.log_path,
            {
                "alert": "webhook_failed",
                "occurred_at": datetime.now(UTC).isoformat(),
                "run_id": alert.get("run_id"),
                "error": failure,
            },
        )
    return failure
