"""The dbt project as dagster-dbt sees it, and a manifest that is never missing or stale.

dagster-dbt builds the asset graph from ``manifest.json``. Nothing generated is committed, so
the manifest is produced here, at load time, with ``dbt parse`` whenever it is missing or older
than any file of the dbt project (models, seeds, snapshots, macros, dbt tests, the yml files).
A fresh clone, ``dagster definitions validate``, ``make run`` and ``dagster dev`` (after an
edit and a reload) all find a current manifest; when nothing changed, loading costs one scan
of file times. ``DbtProject.prepare_if_dev`` alone would only parse under ``dagster dev``.

Where: ``$DBT_TARGET_PATH`` when set (tests give each run its own), else ``target/`` -- the
same place as a plain ``dbt`` command, so dagster-dbt can reuse dbt's partial-parse file. Each
dbt invocation of a run gets its own subfolder (dagster-dbt names it after the op and run).
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject
from packaging import version

from customer_warehouse.config import PROJECT_DIR

#: Files and folders whose change changes the manifest (relative to the project folder).
DBT_INPUTS = (
    "dbt_project.yml",
    "profiles.yml",
    "packages.yml",
    "dependencies.yml",
    "models",
    "seeds",
    "snapshots",
    "macros",
    "analyses",
    "tests/dbt",
)


def dbt_executable() -> str:
    """The ``dbt`` next to this interpreter (works without an activated venv), else PATH's."""
    beside = Path(sys.executable).parent / "dbt"
    if beside.is_file():
        return str(beside)
    found = shutil.which("dbt")
    if found is None:
        raise RuntimeError(
            "dbt is not installed in this environment. Run `make install` (it installs dbt-core "
            "and dbt-duckdb from requirements.lock), then try again."
        )
    return found


class WarehouseDbtResource(DbtCliResource):
    """dagster-dbt's CLI resource, minus a ``dbt --version`` subprocess per run.

    dagster-dbt asks the executable for its version before every invocation (to tell dbt Core
    from the Fusion engine). That costs a Python start-up plus dbt's check for a newer release
    on PyPI: about 7 s per run here, and a hang where PyPI is unreachable. The executable is
    the dbt-core installed beside this interpreter (``dbt_executable``), so its version is
    known without asking.
    """

    @cached_property
    def _cli_version(self) -> version.Version:
        from dbt.version import __version__ as installed

        return version.parse(installed)


def dbt_target_path(project_dir: Path = PROJECT_DIR) -> Path:
    """``$DBT_TARGET_PATH`` (absolute, or relative to the project) or ``<project>/target``."""
    value = os.environ.get("DBT_TARGET_PATH", "").strip()
    path = Path(value) if value else Path("target")
    return path if path.is_absolute() else project_dir / path


def _newest_input_mtime(project_dir: Path, inputs: Iterable[str] = DBT_INPUTS) -> float:
    newest = 0.0
    for name in inputs:
        path = project_dir / name
        if path.is_file():
            newest = max(newest, path.stat().st_mtime)
        elif path.is_dir():
            for child in path.rglob("*"):
                if child.is_file():
                    newest = max(newest, child.stat().st_mtime)
    return newest


def manifest_is_current(project: DbtProject) -> bool:
    manifest = project.manifest_path
    if not manifest.is_file():
        return False
    return manifest.stat().st_mtime >= _newest_input_mtime(project.project_dir)


def build_dbt_project(project_dir: Path = PROJECT_DIR) -> DbtProject:
    """The project, with a current ``manifest.json`` (``dbt parse`` runs when needed)."""
    profiles_dir = os.environ.get("DBT_PROFILES_DIR", "").strip() or project_dir
    project = DbtProject(
        project_dir=project_dir,
        target_path=dbt_target_path(project_dir),
        profiles_dir=profiles_dir,
    )
    if not manifest_is_current(project):
        parse_manifest(project)
    return project


def parse_manifest(project: DbtProject) -> None:
    """``dbt parse`` into a private folder, then move the manifest into place atomically.

    ``dagster dev`` loads the code location in several processes at once; each may parse, and
    none may ever read a half-written manifest. dbt's partial-parse file is reused and kept.
    """
    target = project.project_dir / project.target_path
    scratch = target / f".parse-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    scratch.mkdir(parents=True)
    try:
        partial = target / "partial_parse.msgpack"
        if partial.is_file():
            shutil.copy2(partial, scratch / partial.name)
        WarehouseDbtResource(project_dir=project, dbt_executable=dbt_executable()).cli(
            ["parse", "--quiet"], target_path=scratch
        ).wait()
        if (scratch / partial.name).is_file():
            os.replace(scratch / partial.name, partial)
        os.replace(scratch / "manifest.json", project.manifest_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
