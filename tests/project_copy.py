"""A copy of the dbt project in a test's folder: for tests that edit a model or macro, or run a
tool (MetricFlow's `mf`) that reads and writes the project's own target/ folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from .conftest import PROJECT_DIR

PROJECT_PARTS = ("dbt_project.yml", "profiles.yml", "models", "macros", "seeds", "tests/dbt")


def project_copy(root: Path) -> Path:
    """Copy the dbt project's files into ``root/project`` and return that folder."""
    copy = root / "project"
    copy.mkdir()
    for name in PROJECT_PARTS:
        source = PROJECT_DIR / name
        if source.is_dir():
            shutil.copytree(source, copy / name)
        else:
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy
