"""Alerts for failed runs: the alert's content, the log file, a real webhook receiver on
127.0.0.1 (accepting, refusing, too slow, not there), and the run-failure sensor evaluated on a
real failed run of the raw step in a temporary Dagster instance.
"""

from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from customer_warehouse import alerts
from orchestration.defs.alerts.sensors import run_failure_alert
from orchestration.defs.raw.assets import raw_files
from orchestration.defs.resources import WarehouseResource

from .dagster_job import point_settings_at

WHEN = datetime(2026, 3, 1, 6, 0, 41, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# A real HTTP receiver on the loopback address
# --------------------------------------------------------------------------------------------


class Receiver:
    """An HTTP server on 127.0.0.1 (a free port) that records every POST body and answers with
    ``status`` after ``delay`` seconds."""

    def __init__(self, status: int = 200, delay: float = 0.0):
        self.status, self.delay = status, delay
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the http.server API)
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                receiver.headers.append(dict(self.headers))
                time.sleep(receiver.delay)
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):  # keep the test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/warehouse"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def _closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a port that was just free)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_port
    server.server_close()
    return f"http://127.0.0.1:{port}/"


# --------------------------------------------------------------------------------------------
# The alert itself
# --------------------------------------------------------------------------------------------


def test_first_line_is_the_error_without_its_class_name():
    assert alerts.first_line(
        "dagster._core.definitions.events.Failure: Loading the raw files failed: orders.csv: "
        "missing required column(s) amount. Fix: re-export it.\nStack trace ..."
    ) == ("Loading the raw files failed: orders.csv: missing required column(s) amount. "
          "Fix: re-export it.")  # fmt: skip
    assert alerts.first_line("\n\n  customer_warehouse.config.ConfigError: CW_X is bad\n") == (
        "CW_X is bad"
    )
    assert alerts.first_line("plain message: with a colon") == "plain message: with a colon"
    assert alerts.first_line(None) == "" and alerts.first_line("  \n ") == ""


def test_the_alert_names_the_run_the_failed_steps_assets_checks_and_the_fix():
    alert = alerts.format_alert(
        run_id="1a2b3c4d-0000-0000-0000-000000000000",
        job_name="full_refresh",
        failed_steps=[
            (
                "dbt_models",
                "dagster._core.definitions.events.Failure: unique_response_id failed\nmore",
            ),
            ("loyalty_points", "RuntimeError: second"),
        ],  # fmt: skip
        failed_assets=["marts/customer_tiers", "intermediate/int_x", "marts/customer_tiers"],
        failed_checks=["staging/stg_surveys__responses:unique_response_id"],
        assets_not_updated=57,
        run_error="Execution of run for full_refresh failed.",
        occurred_at=WHEN,
    )
    assert alert == {
        "alert": "run_failed",
        "occurred_at": "2026-03-01T06:00:41+00:00",
        "run_id": "1a2b3c4d-0000-0000-0000-000000000000",
        "job_name": "full_refresh",
        "failed_steps": [
            {"step": "dbt_models", "error": "unique_response_id failed"},
            {"step": "loyalty_points", "error": "second"},
        ],
        "failed_assets": ["intermediate/int_x", "marts/customer_tiers"],
        "failed_checks": ["staging/stg_surveys__responses:unique_response_id"],
        "assets_not_updated": 57,
        "fix": "unique_response_id failed",
        "summary": "Run 1a2b3c4d of full_refresh failed in dbt_models, loyalty_points: "
        "unique_response_id failed",
    }
    line = alerts.alert_line(alert)
    assert "\n" not in line and json.loads(line) == alert


def test_a_run_that_failed_before_any_step_gets_the_runs_own_error_and_long_lists_are_cut():
    alert = alerts.format_alert(
        run_id="r" * 36,
        job_name="survey_refresh",
        failed_steps=[],
        failed_assets=[f"marts/t{i:03d}" for i in range(alerts.MAX_NAMED_ASSETS + 7)],
        run_error="DagsterUserCodeLoadError: could not load orchestration.definitions\ntrace",
    )
    assert alert["fix"] == "could not load orchestration.definitions"
    assert "before any step" in alert["summary"]
    assert len(alert["failed_assets"]) == alerts.MAX_NAMED_ASSETS
    assert alert["failed_assets_omitted"] == 7


def test_alerts_are_appended_one_json_line_each_to_an_owner_only_file(tmp_path):
    path = tmp_path / "logs" / "alerts.jsonl"
    first = {"alert": "run_failed", "run_id": "a", "fix": "line one\nline two"}
    alerts.write_alert(path, first)
    alerts.write_alert(path, {"alert": "run_failed", "run_id": "b"})
    lines = path.read_text().splitlines()
    assert [json.loads(line)["run_id"] for line in lines] == ["a", "b"]
    assert json.loads(lines[0])["fix"] == "line one\nline two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_destination_defaults_beside_the_warehouse_and_survives_bad_settings(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    plain = alerts.alert_destination({"CW_WAREHOUSE_PATH": str(warehouse)})
    assert plain == alerts.Destination(tmp_path / "alerts.jsonl", None, ())
    bad = alerts.alert_destination(
        {
            "CW_WAREHOUSE_PATH": str(warehouse),
            "CW_ALERT_LOG": str(tmp_path),  # a folder
            "CW_ALERT_WEBHOOK_URL": "file:///etc/passwd",
        }
    )
    assert bad.log_path == tmp_path / "alerts.jsonl" and bad.webhook_url is None
    assert len(bad.problems) == 2
    assert "CW_ALERT_LOG" in bad.problems[0] and "CW_ALERT_WEBHOOK_URL" in bad.problems[1]
    chosen = alerts.alert_destination(
        {"CW_ALERT_LOG": str(tmp_path / "a.jsonl"), "CW_ALERT_WEBHOOK_URL": "https://h.example/x"}
    )
    assert chosen.log_path == tmp_path / "a.jsonl" and chosen.webhook_url == "https://h.example/x"


# --------------------------------------------------------------------------------------------
# The webhook, against a real server on 127.0.0.1
# --------------------------------------------------------------------------------------------


def test_the_webhook_receives_the_same_json_as_the_log(tmp_path, receiver):
    alert = {"alert": "run_failed", "run_id": "r1", "fix": "Set CW_PII_KEY"}
    destination = alerts.Destination(tmp_path / "alerts.jsonl", receiver.url)
    assert alerts.send_alert(alert, destination) is None
    assert receiver.bodies == [alert]
    assert receiver.headers[0]["Content-Type"] == "application/json"
    assert [json.loads(line) for line in destination.log_path.read_text().splitlines()] == [alert]


@pytest.mark.parametrize("case", ["http_error", "refused", "too_slow"])
def test_a_failing_webhook_is_logged_never_raised_and_the_alert_stays_in_the_log(tmp_path, case):
    alert = {"alert": "run_failed", "run_id": "r2"}
    if case == "refused":
        server, url = None, _closed_port_url()
    else:
        server = Receiver(status=500) if case == "http_error" else Receiver(delay=2.0)
        server.__enter__()
        url = server.url
    try:
        started = time.monotonic()
        failure = alerts.send_alert(alert, alerts.Destination(tmp_path / "a.jsonl", url), 0.5)
        elapsed = time.monotonic() - started
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    assert failure is not None and url in failure
    expected = {
        "http_error": "HTTP 500",
        "refused": "could not be reached",
        "too_slow": "timed out",
    }
    assert expected[case] in failure
    assert elapsed < 1.9  # the short timeout, not the receiver's delay
    lines = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert lines[0] == alert
    assert lines[1]["alert"] == "webhook_failed" and lines[1]["run_id"] == "r2"
    assert lines[1]["error"] == failure


# --------------------------------------------------------------------------------------------
# The sensor, on a real failed run
# --------------------------------------------------------------------------------------------


@pytest.fixture
def broken_raw(tmp_path, monkeypatch) -> Path:
    """A raw folder whose orders file lacks the amount column: raw_files fails at once."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "orders.csv").write_text("order_id,customer_id,ordered_at\n1,c1,2025-01-01\n")
    point_settings_at(monkeypatch, raw, tmp_path / "warehouse.duckdb")
    return raw


def _evaluate_sensor_on_failed_run(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [raw_files],
        resources={"warehouse": WarehouseResource()},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
    ).for_run_failure()
    run_failure_alert(context)
    return result


def test_the_sensor_writes_the_failed_run_step_assets_and_fix(broken_raw, tmp_path, monkeypatch):
    log = tmp_path / "alerts" / "failed_runs.jsonl"
    log.parent.mkdir()
    monkeypatch.setenv("CW_ALERT_LOG", str(log))
    with dg.instance_for_test() as instance:
        result = _evaluate_sensor_on_failed_run(instance)
    [alert] = [json.loads(line) for line in log.read_text().splitlines()]
    assert alert["alert"] == "run_failed" and alert["run_id"] == result.run_id
    assert alert["job_name"] == "__ephemeral_asset_job__"
    assert [step["step"] for step in alert["failed_steps"]] == ["raw_files"]
    # Every asset of the failed step is named: nothing of the raw layer was written.
    assert {"raw/orders", "raw/customers", "raw/erasure_requests"} <= set(alert["failed_assets"])
    assert alert["assets_not_updated"] == len(alert["failed_assets"])
    assert alert["failed_checks"] == []
    # The fix is the loader's own message: the file, the missing column.
    assert "orders.csv" in alert["fix"] and "amount" in alert["fix"]
    assert not alert["fix"].startswith("dagster.")
    assert alert["summary"].startswith(f"Run {result.run_id[:8]} of __ephemeral_asset_job__ ")


def test_the_sensor_posts_the_alert_to_the_webhook(broken_raw, tmp_path, monkeypatch, receiver):
    monkeypatch.setenv("CW_ALERT_WEBHOOK_URL", receiver.url)
    with dg.instance_for_test() as instance:
        result = _evaluate_sensor_on_failed_run(instance)
    # Default log: beside the warehouse file.
    [logged] = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert receiver.bodies == [logged]
    assert logged["run_id"] == result.run_id and "amount" in logged["fix"]


def test_an_invalid_webhook_setting_fails_the_run_and_the_alert_still_goes_to_the_log(
    broken_raw, tmp_path, monkeypatch
):
    """The run fails because of the setting itself (every step checks the CW_* settings); the
    sensor cannot post, but writes the alert, whose fix names the setting."""
    monkeypatch.setenv("CW_ALERT_WEBHOOK_URL", "hooks.example.com/no-scheme")
    with dg.instance_for_test() as instance:
        _evaluate_sensor_on_failed_run(instance)
    [logged] = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert logged["fix"].startswith("CW_ALERT_WEBHOOK_URL='hooks.example.com/no-scheme' is not")
    assert "CW_ALERT_WEBHOOK_URL" in logged["settings_problems"][0]
