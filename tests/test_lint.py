"""Style does not drift: the suite runs the same linters as `make lint`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=PROJECT_DIR, capture_output=True, text=True, env=os.environ | env, timeout=900
    )


def test_ruff_check_and_format():
    check = _run([str(BIN / "ruff"), "check", "."])
    assert check.returncode == 0, check.stdout[-4000:]
    fmt = _run([str(BIN / "ruff"), "format", "--check", "."])
    assert fmt.returncode == 0, fmt.stdout[-4000:]


def test_sqlfluff(tmp_path):
    # The dbt templater compiles the project: give it its own target folder and DuckDB file.
    proc = _run(
        [
            str(BIN / "sqlfluff"),
            "lint",
            "models",
            "macros",
            "tests/dbt",
            "--disable-progress-bar",
        ],
        CW_WAREHOUSE_PATH=str(tmp_path / "lint.duckdb"),
        DBT_TARGET_PATH=str(tmp_path / "target"),
        DBT_LOG_PATH=str(tmp_path / "logs"),
        DBT_PROFILES_DIR=str(PROJECT_DIR),
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
