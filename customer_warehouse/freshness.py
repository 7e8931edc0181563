"""How old is the raw data a run works on? Freshness of the raw inputs, judged against
``CW_MAX_RAW_AGE_HOURS``.

The age of a source is *now minus the modification time of its newest raw file*: the moment
the export last arrived in ``CW_RAW_DIR``. The files of a source are ``<source>.csv`` /
``<source>.parquet`` and, when the raw folder holds deliveries over time, every file in the
folder ``<source>/`` (``orders/2025-01-14.csv``, ...); the surveys are every ``*.csv`` /
``*.json`` in ``surveys/``. Hidden files do not count (the loaders ignore them too).

Why the file and not the newest order: an export job that delivered today is current even
when the shop sold nothing yesterday (a holiday), and a missing delivery is exactly what a
nightly run must notice. The newest order timestamp in ``raw.orders`` is stated beside it
(:func:`newest_order_at`), so a delivery that arrived but holds only old orders is visible
too; demo data, for one, is generated today with orders up to its fixed end date.

A source without a file (an optional export the shop does not have) is not stale: there is
nothing to be late. Nothing here imports Dagster: the asset checks (warning severity) on the
raw assets and the marts, the run tag and the log line are wired in
``orchestration/defs/freshness``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from customer_warehouse.config import MAX_RAW_AGE_VARIABLE
from customer_warehouse.ingestion.surveys import SURVEY_SUFFIXES

#: Raw file suffixes of the shop exports (the survey folder: surveys.SURVEY_SUFFIXES).
EXPORT_SUFFIXES = (".csv", ".parquet")
SURVEYS = "surveys"


@dataclass(frozen=True)
class SourceAge:
    """The newest raw file of one source and how old it is at ``checked_at``."""

    source: str
    newest_file: Path | None
    modified_at: datetime | None  # UTC
    checked_at: datetime  # UTC
    max_age_hours: float

    @property
    def age_hours(self) -> float | None:
        if self.modified_at is None:
            return None
        return (self.checked_at - self.modified_at).total_seconds() / 3600.0

    @property
    def stale(self) -> bool:
        age = self.age_hours
        return age is not None and age > self.max_age_hours

    def describe(self) -> str:
        """One sentence: what was checked and what to do when it is stale."""
        if self.newest_file is None:
            return f"{self.source}: no raw file (optional source), nothing to be late."
        age = self.age_hours or 0.0
        when = _iso(self.modified_at)
        if not self.stale:
            return (
                f"{self.source}: newest file {self.newest_file.name} arrived {when}, "
                f"{age:.1f} h ago (limit {self.max_age_hours:g} h)."
            )
        return (
            f"{self.source}: newest file {self.newest_file.name} arrived {when}, {age:.1f} h "
            f"ago, more than {MAX_RAW_AGE_VARIABLE}={self.max_age_hours:g} h: this run works "
            "on stale data. Check that the export job delivered into CW_RAW_DIR (or raise "
            f"{MAX_RAW_AGE_VARIABLE} if this source is delivered less often)."
        )


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def source_files(raw_dir: Path, source: str) -> list[Path]:
    """Every raw file of ``source`` in ``raw_dir``: the single export, the files of its
    deliveries folder, or for ``surveys`` the survey files. Hidden files are left out."""
    raw_dir = Path(raw_dir)
    if source == SURVEYS:
        return _visible_files(raw_dir / SURVEYS, SURVEY_SUFFIXES)
    singles = [raw_dir / f"{source}{suffix}" for suffix in EXPORT_SUFFIXES]
    return [path for path in singles if path.is_file()] + _visible_files(
        raw_dir / source, EXPORT_SUFFIXES
    )


def _visible_files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in suffixes
    )


def source_age(
    raw_dir: Path, source: str, max_age_hours: float, now: datetime | None = None
) -> SourceAge:
    """The age of ``source``'s newest raw file at ``now`` (default: the current time)."""
    checked_at = (now or datetime.now(UTC)).astimezone(UTC)
    newest: Path | None = None
    newest_mtime = 0.0
    for path in source_files(raw_dir, source):
        mtime = path.stat().st_mtime
        if newest is None or mtime > newest_mtime:
            newest, newest_mtime = path, mtime
    return SourceAge(
        source=source,
        newest_file=newest,
        modified_at=None if newest is None else datetime.fromtimestamp(newest_mtime, UTC),
        checked_at=checked_at,
        max_age_hours=max_age_hours,
    )


def source_ages(
    raw_dir: Path, sources: Iterable[str], max_age_hours: float, now: datetime | None = None
) -> list[SourceAge]:
    """:func:`source_age` of every source, all at the same moment."""
    checked_at = now or datetime.now(UTC)
    return [source_age(raw_dir, source, max_age_hours, checked_at) for source in sources]


def stale_summary(ages: Iterable[SourceAge]) -> str | None:
    """A short line naming every stale source and its age (for the run's tag and log), or
    None when nothing is stale."""
    stale = [age for age in ages if age.stale]
    if not stale:
        return None
    parts = [f"{age.source} {age.age_hours:.1f} h" for age in stale]
    return (
        f"stale raw data: {', '.join(parts)} old "
        f"(limit {MAX_RAW_AGE_VARIABLE}={stale[0].max_age_hours:g} h)"
    )


def newest_order_at(
    con: duckdb.DuckDBPyConnection, table: str = "raw.orders", now: datetime | None = None
) -> datetime | None:
    """The latest ``ordered_at`` in the raw orders that reads as a timestamp and is not in the
    future (raw values are text; a broken one is staging's business, not this check's), UTC.
    Values without an offset are taken as UTC."""
    checked_at = (now or datetime.now(UTC)).astimezone(UTC)
    value = con.execute(
        f"""
        select max(moment) from (
            select case
                when regexp_matches(trim(ordered_at), '(Z|z|[+-][0-9]{{2}}:?[0-9]{{2}})$')
                    then try_cast(trim(ordered_at) as timestamptz)
                else timezone('UTC', try_cast(trim(ordered_at) as timestamp))
            end as moment
            from {table}
        ) where moment <= ?
        """,
        [checked_at],
    ).fetchone()[0]
    if value is None:
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
