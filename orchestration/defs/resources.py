"""What every asset shares: the DuckDB warehouse resource, the writer pool and the retry rule.

DuckDB allows one writing process per file. Every asset that writes the warehouse is in the
concurrency pool ``duckdb_writer`` (limit 1 in ``orchestration/dagster.yaml``), so a second run
waits for the pool instead of failing on the file lock. What can still hold the lock is a
process outside Dagster (a DuckDB shell, a notebook, a plain ``dbt build``): that is the one
failure a retry can fix, so only lock conflicts are retried (:data:`LOCK_RETRY`). Everything
else -- a broken raw file, a failed dbt test -- is a data error that fails at once with its
message (:func:`fail_fast_on_data_errors`). (A model fit that cannot be trusted is not an
error: the prediction asset falls back and says why, docs/predictions.md.) A damaged warehouse
file fails at once too, naming the file and ``make rebuild`` (:func:`corruption_failure`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb

from customer_warehouse import warehouse
from customer_warehouse.config import ConfigError, Settings, load_settings

#: The concurrency pool of every asset that writes the DuckDB file.
WRITER_POOL = "duckdb_writer"

#: Retries for a locked warehouse file: 4 attempts over about 2 minutes (15 s, 30 s, 60 s).
LOCK_RETRY = dg.RetryPolicy(
    max_retries=3, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

#: What every asset (and multi-asset) that writes the DuckDB file passes to its decorator:
#: one writer at a time (the pool) and retries when another process holds the file's lock.
WRITES_WAREHOUSE = {"pool": WRITER_POOL, "retry_policy": LOCK_RETRY}

_LOCK_MARKERS = ("could not set lock", "conflicting lock")
#: What DuckDB says about a damaged file: a broken header, or a block whose checksum is wrong.
_CORRUPTION_MARKERS = ("not a valid duckdb database file", "corrupt database file")
#: The documented way back from a damaged warehouse file (Makefile, docs/orchestration.md).
REBUILD_COMMAND = "make rebuild"


def is_lock_conflict(error: BaseException | str) -> bool:
    """True when `error` says another process holds the DuckDB file (worth a retry)."""
    text = str(error).lower()
    return any(marker in text for marker in _LOCK_MARKERS)


def is_corruption(error: BaseException | str) -> bool:
    """True when `error` says the DuckDB file itself is damaged (no retry, no data fix helps)."""
    text = str(error).lower()
    return any(marker in text for marker in _CORRUPTION_MARKERS)


def corruption_failure(path: object, error: BaseException | str) -> dg.Failure:
    """The failure of a run that met a damaged warehouse file: the file and the way back."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else "damaged"
    return dg.Failure(
        description=(
            f"The warehouse file {path} is damaged ({first_line}). Rebuild it from the raw "
            f"files with `{REBUILD_COMMAND}`: it moves the damaged file aside (kept, with a "
            "timestamp) and runs the whole job again. The serving copy keeps serving the last "
            'published version meanwhile (docs/orchestration.md, "Crashes and reruns").'
        ),
        metadata={"warehouse_path": str(path), "rebuild_command": REBUILD_COMMAND},
        allow_retries=False,
    )


@contextmanager
def fail_fast_on_data_errors(what: str) -> Iterator[None]:
    """Turn every error except a file-lock conflict into a ``Failure`` that is not retried.

    The retry policy retries any exception by default; a data error would then fail four times
    with the same message. Lock conflicts pass through unchanged, so ``LOCK_RETRY`` applies.
    """
    try:
        yield
    except dg.Failure:
        raise
    except Exception as exc:
        if is_lock_conflict(exc):
            raise
        if is_corruption(exc):
            raise corruption_failure(_warehouse_path_or_unknown(), exc) from exc
        raise dg.Failure(
            description=f"{what} failed: {exc}",
            metadata={"error_type": type(exc).__name__},
            allow_retries=False,
        ) from exc


def _warehouse_path_or_unknown() -> object:
    try:
        return load_settings().warehouse_path
    except ConfigError:
        return "CW_WAREHOUSE_PATH"


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse, configured from the environment like dbt is.

    ``CW_WAREHOUSE_PATH``, ``CW_RAW_DIR`` and ``CW_AS_OF_DATE`` are read when a run starts
    (``customer_warehouse.config.load_settings``), not when the definitions load: dbt reads the
    same variables through ``profiles.yml``, so the Python assets and the dbt models can never
    disagree about which file they write. An invalid value fails the run with the message
    naming the variable and the fix.
    """

    def settings(self) -> Settings:
        try:
            return load_settings()
        except ConfigError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the warehouse file; a write connection creates the folder first."""
        settings = self.settings()
        path = settings.warehouse_path
        # CW_DUCKDB_MEMORY_LIMIT / CW_DUCKDB_TEMP_DIR, as dbt's profile passes them.
        try:
            con = warehouse.open_connection(
                path, read_only=read_only, config=settings.duckdb_config
            )
        except duckdb.Error as exc:
            if is_corruption(exc):
                raise corruption_failure(path, exc) from exc
            raise
        try:
            yield con
        finally:
            con.close()
