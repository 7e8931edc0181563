"""The versions on disk: version ids, which versions exist and which is current, the atomic
switch of ``current``, pruning, and the lock that lets one publish at a time into a folder.

Reads and writes ``serving_dir`` (``versions/<id>/``, ``current``, ``CURRENT``,
``.publish.lock``); never the warehouse. The layout is in the package docstring.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from customer_warehouse.config import DEFAULT_SERVING_KEEP
from customer_warehouse.serving.rules import ServingError

DEFAULT_KEEP = DEFAULT_SERVING_KEEP
DUCKDB_FILE = "serving.duckdb"
MANIFEST_FILE = "manifest.json"
VERSIONS_DIR = "versions"
CURRENT_LINK = "current"
CURRENT_FILE = "CURRENT"
LOCK_FILE = ".publish.lock"
PARTIAL_SUFFIX = ".partial"
VERSION_RE = re.compile(r"^(\d{8}T\d{6}\.\d{6}Z)-([0-9a-f]{6})$")
_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
#: How long a publish waits for another one (a second Dagster instance on the same folder).
LOCK_TIMEOUT_SECONDS = 600.0


@dataclass(frozen=True)
class TableManifest:
    rows: int
    checksum: str
    columns: list[str]
    omitted_columns: list[str]
    parquet: str


@dataclass(frozen=True)
class Version:
    """A published version: its id, folder and manifest (as written to manifest.json)."""

    id: str
    path: Path
    manifest: dict = field(hash=False)
    pruned: tuple[str, ...] = ()
    removed_partials: tuple[str, ...] = ()

    @property
    def duckdb_path(self) -> Path:
        return self.path / DUCKDB_FILE

    @property
    def tables(self) -> dict[str, dict]:
        return self.manifest["tables"]


def _time_of(version_id: str) -> datetime:
    return datetime.strptime(VERSION_RE.match(version_id).group(1), _TIME_FORMAT).replace(
        tzinfo=UTC
    )


def new_version_id(existing: Sequence[str] = (), now: datetime | None = None) -> str:
    """``YYYYMMDDTHHMMSS.ffffffZ-<6 hex>``, later than every id in ``existing``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    if existing:
        latest = _time_of(max(existing))
        if moment <= latest:  # a clock that went back, or two publishes in one microsecond
            moment = latest + timedelta(microseconds=1)
    return f"{moment.strftime(_TIME_FORMAT)}-{secrets.token_hex(3)}"


def list_versions(serving_dir: Path) -> list[str]:
    """Ids of the complete versions in ``serving_dir``, oldest first."""
    folder = Path(serving_dir) / VERSIONS_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if VERSION_RE.match(p.name) and p.is_dir())


def current_version(serving_dir: Path) -> str | None:
    """The id ``current`` points at (the ``CURRENT`` file if there is no symlink), or None."""
    serving_dir = Path(serving_dir)
    link = serving_dir / CURRENT_LINK
    if link.is_symlink():
        return Path(os.readlink(link)).name
    pointer = serving_dir / CURRENT_FILE
    if pointer.is_file():
        return pointer.read_text(encoding="utf-8").strip() or None
    return None


def read_manifest(serving_dir: Path, version_id: str | None = None) -> dict:
    """The manifest of a version (default: the current one)."""
    version_id = version_id or current_version(serving_dir)
    if version_id is None:
        raise ServingError(f"{serving_dir} has no current version; nothing was published yet.")
    path = Path(serving_dir) / VERSIONS_DIR / version_id / MANIFEST_FILE
    return json.loads(path.read_text(encoding="utf-8"))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            _fsync_path(Path(folder) / name)
        _fsync_path(Path(folder))


def _replace_atomically(serving_dir: Path, name: str, make_temp) -> None:
    temp = serving_dir / f".{name}.tmp-{secrets.token_hex(4)}"
    make_temp(temp)
    target = serving_dir / name
    if target.is_dir() and not target.is_symlink():
        # A copy of the folder that followed the link (`cp -r`, a backup restored) left a real
        # folder where the link belongs: set it aside, then switch as usual.
        aside = serving_dir / f".{name}.replaced-{secrets.token_hex(4)}"
        os.rename(target, aside)
        shutil.rmtree(aside, ignore_errors=True)
    os.replace(temp, target)


def switch_to(serving_dir: Path, version_id: str) -> None:
    """Make ``version_id`` current: the ``current`` symlink, then the ``CURRENT`` file.

    Each is replaced in one step (a new symlink / file renamed over the old one), so a reader
    finds either the old or the new version, never none. Also the way to roll back by hand.
    """
    serving_dir = Path(serving_dir)
    if not (serving_dir / VERSIONS_DIR / version_id / MANIFEST_FILE).is_file():
        raise ServingError(f"{serving_dir}: there is no complete version {version_id}.")

    def symlink(temp: Path) -> None:
        os.symlink(Path(VERSIONS_DIR) / version_id, temp)

    def pointer(temp: Path) -> None:
        with temp.open("w", encoding="utf-8") as handle:
            handle.write(version_id + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    _replace_atomically(serving_dir, CURRENT_LINK, symlink)
    _replace_atomically(serving_dir, CURRENT_FILE, pointer)
    _fsync_path(serving_dir)


def prune(serving_dir: Path, keep: int) -> tuple[list[str], list[str]]:
    """Remove all but the newest ``keep`` versions (never the current one), every stale
    ``.partial`` folder and leftover temp links. Call it only while holding the publish lock.
    Returns (pruned version ids, removed partial folders)."""
    serving_dir = Path(serving_dir)
    versions = list_versions(serving_dir)
    current = current_version(serving_dir)
    kept = set(versions[-keep:]) | {current}
    pruned = [v for v in versions if v not in kept]
    folder = serving_dir / VERSIONS_DIR
    for version_id in pruned:
        shutil.rmtree(folder / version_id)
    partials = sorted(p.name for p in folder.iterdir() if p.name.endswith(PARTIAL_SUFFIX))
    for name in partials:
        shutil.rmtree(folder / name, ignore_errors=True)
    for temp in serving_dir.glob(".*.tmp-*"):
        temp.unlink(missing_ok=True)
    return pruned, partials


@contextmanager
def publish_lock(serving_dir: Path, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """One publish at a time per folder. The kernel drops the lock when its holder dies, so a
    killed publish never blocks the next; a live one is waited for, at most ``timeout`` s."""
    path = Path(serving_dir) / LOCK_FILE
    with path.open("a+", encoding="utf-8") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    raise ServingError(
                        f"Another publish into {serving_dir} (process {holder}) has held the "
                        f"lock for {timeout:.0f} s; wait for it, or stop it."
                    ) from None
                time.sleep(0.5)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
