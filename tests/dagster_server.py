"""Talking to a real `dagster dev` started by a test: a free loopback port, GraphQL calls, and
waiting for the server with its log in the failure message."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str, variables: dict | None = None) -> dict[str, Any]:
    body = {"query": query, "variables": variables or {}}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def log_tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def wait_for(
    what: str, probe: Callable[[], Any], timeout: float, server: subprocess.Popen, log: Path
) -> Any:
    """Call `probe` until it returns something truthy; fail with the log's tail on timeout or
    when the server exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"dagster dev exited ({server.returncode}):\n{log_tail(log)}")
        try:
            value = probe()
        except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError, TypeError):
            value = None
        if value:
            return value
        time.sleep(2)
    pytest.fail(f"timed out waiting for {what}:\n{log_tail(log)}")
