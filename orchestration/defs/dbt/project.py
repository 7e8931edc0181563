"""The dbt project as dagster-dbt sees it, and a manifest that is never missing or stale.

dagster-dbt builds the asset graph from ``manifest.json``. Nothing generated is committed, so
the manifest is produced here, at load time, with ``dbt parse`` whenever it is missing or older
than any file of the dbt project (models, seeds, snapshots, macros, dbt tests, the yml files).
A fresh clone, ``dagster definitions validate``, ``make run`` and ``dagster dev`` (after an
edit and a reload) all find a current manifest; when nothing changed, loading costs one scan
of file times. ``DbtProject.prepare_if_dev`` alone would only parse under ``dagster dev``.

Where: ``$DBT_TARGET_PATH`` when set (tests give each run its own), else ``target/`` -- the
same place as a plain ``dbt`` command. Each dbt invocation of a run gets its own subfolder
(dagster-dbt names it after the op and run); dbt's partial-parse file is copied into it from
the target folder and, after a successful invocation, back (:func:`keep_partial_parse`), so a
run's dbt steps (the marts, the tier history, what is derived from it) parse the project once,
not once per step. dbt checks the file against the project, profile, vars and environment
variables and parses again whatever changed, so a stale file costs time, never correctness.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from dagster_dbt import DbtCliInvocation, DbtCliResource, DbtProject
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

    def cli(
        self,
        args: Sequence[str],
        *,
        target_path: Path | None = None,
        context: Any = None,
        **kwargs: Any,
    ) -> DbtCliInvocation:
        """dagster-dbt's ``cli``, its fresh target folder seeded with the partial-parse file."""
        if target_path is None:
            target_path = self._get_unique_target_path(context=context)
            if not target_path.is_absolute():
                target_path = Path(self.project_dir) / target_path
            seed_partial_parse(target_path)
        return super().cli(args, target_path=target_path, context=context, **kwargs)


PARTIAL_PARSE_FILE = "partial_parse.msgpack"


def seed_partial_parse(invocation_target: Path) -> None:
    """Copy the target folder's partial-parse file into a new invocation's folder."""
    source = invocation_target.parent / PARTIAL_PARSE_FILE
    if source.is_file():
        invocation_target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, invocation_target / PARTIAL_PARSE_FILE)


def keep_partial_parse(invocation_target: Path) -> None:
    """After a successful invocation: its partial-parse file becomes the target folder's
    (atomically: another process may be reading it)."""
    produced = invocation_target / PARTIAL_PARSE_FILE
    if produced.is_file():
        scratch = invocation_target.parent / f".{PARTIAL_PARSE_FILE}.{uuid.uuid4().hex[:8]}"
        shutil.copy2(produced, scratch)
        os.replace(scratch, invocation_target.parent / PARTIAL_PARSE_FILE)


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
