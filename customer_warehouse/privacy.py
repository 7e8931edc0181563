"""Personal data: which columns hold it, the keyed pseudonym, and the pseudonym key.

Reads ``seeds/personal_columns.csv`` (the one list of personal column names, also read by the
dbt test ``assert_no_personal_data_in_marts``) and the environment (``CW_PII_KEY``). Writes
nothing but the generated demo key. The rules are in docs/privacy.md:

* BI tables carry no personal value; where a stable key is needed to join with other systems,
  it is ``customer_key`` = HMAC-SHA256(``CW_PII_KEY``, customer_id), hex.
* The key comes from ``CW_PII_KEY`` (at least 32 characters). On the demo data (``CW_RAW_DIR``
  unset) a random key is generated once into ``data/pii_key`` (owner-only) and the run says
  so; any other raw folder without ``CW_PII_KEY`` stops with the command that makes a key.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from customer_warehouse import warehouse
from customer_warehouse.config import DEFAULT_RAW_DIR, PROJECT_DIR, ConfigError

PERSONAL_COLUMNS_SEED = PROJECT_DIR / "seeds" / "personal_columns.csv"
DEMO_KEY_PATH = PROJECT_DIR / "data" / "pii_key"
MIN_KEY_LENGTH = 32
KEY_VARIABLE = "CW_PII_KEY"


@functools.cache
def personal_columns() -> frozenset[str]:
    """Lower-cased column names that hold personal data (seeds/personal_columns.csv)."""
    with PERSONAL_COLUMNS_SEED.open(newline="", encoding="utf-8") as handle:
        return frozenset(row["column_name"].strip().lower() for row in csv.DictReader(handle))


def is_personal(column: str) -> bool:
    return column.strip().lower() in personal_columns()


def without_personal(columns: Iterable[str]) -> list[str]:
    """The columns that may be shown or published, in their order."""
    return [column for column in columns if not is_personal(column)]


def pseudonym(key: bytes, value: str | None) -> str | None:
    """HMAC-SHA256 of the value under the key, hex (64 characters); None stays None."""
    if value is None:
        return None
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def pii_key(
    raw_dir: Path, environ: Mapping[str, str] | None = None, *, log=None
) -> tuple[bytes, str]:
    """(key, where it came from). Raises ``ConfigError`` when a real run has no key."""
    env = os.environ if environ is None else environ
    value = env.get(KEY_VARIABLE, "").strip()
    if value:
        if len(value) < MIN_KEY_LENGTH:
            raise ConfigError(
                f"{KEY_VARIABLE} is {len(value)} characters long; use at least {MIN_KEY_LENGTH} "
                "random characters, e.g. `export CW_PII_KEY=$(python3 -c 'import secrets; "
                "print(secrets.token_hex(32))')`, and keep it: changing it changes every "
                "customer_key."
            )
        return value.encode("utf-8"), KEY_VARIABLE
    if Path(raw_dir).resolve() != DEFAULT_RAW_DIR.resolve():
        raise ConfigError(
            f"{KEY_VARIABLE} is not set. The warehouse publishes customer_key = HMAC-SHA256 of "
            "the customer id under this key instead of the id, so that other systems can join "
            "without seeing ids. Create a key once, keep it secret and stable: `export "
            "CW_PII_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')` (in the "
            "scheduler's environment too). Only the demo data run without it (docs/privacy.md)."
        )
    if not DEMO_KEY_PATH.is_file():
        DEMO_KEY_PATH.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(DEMO_KEY_PATH, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it just now
            pass
        else:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32))
    if log is not None:
        log(
            f"Demo data: using the generated pseudonym key in {DEMO_KEY_PATH} (set "
            f"{KEY_VARIABLE} for real data; docs/privacy.md)."
        )
    return DEMO_KEY_PATH.read_text().strip().encode("utf-8"), str(DEMO_KEY_PATH)


# --------------------------------------------------------------------------------------------
# Erasure requests (the right to be forgotten)
# --------------------------------------------------------------------------------------------

#: In CW_RAW_DIR: one customer_id per row (optional requested_at), UTF-8 CSV.
ERASURE_FILE = "erasure_requests.csv"
#: Every request ever applied: customer_id, requested_at, applied_at, compacted_at.
ERASURE_TABLE = "raw.erasure_requests"
#: The temporary table of erased ids a load scrubs with (see ``scrubbed``).
ERASED_IDS = "_cw_erased_ids"


@dataclass(frozen=True)
class ErasureRequest:
    customer_id: str
    requested_at: str | None = None


def read_erasure_requests(raw_dir: Path) -> list[ErasureRequest]:
    """The requests in ``raw_dir/erasure_requests.csv`` (none when the file is absent).

    A file without a customer_id column stops the run (``ConfigError``): a request that is
    silently not applied is worse than no run.
    """
    path = Path(raw_dir) / ERASURE_FILE
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        names = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
        if "customer_id" not in names:
            raise ConfigError(
                f"{path}: no customer_id column (found: {', '.join(names) or 'nothing'}). An "
                "erasure request file has a header line `customer_id,requested_at` and one "
                "customer per line (docs/privacy.md)."
            )
        requests: dict[str, ErasureRequest] = {}
        for row in reader:
            customer_id = (row.get(names["customer_id"]) or "").strip()
            if customer_id:
                requested = (row.get(names.get("requested_at", ""), "") or "").strip() or None
                requests.setdefault(customer_id, ErasureRequest(customer_id, requested))
    return list(requests.values())


def register_erased_ids(con: Any, requests: Iterable[ErasureRequest]) -> int:
    """Make ``_cw_erased_ids`` (temp) hold the requested ids; return how many."""
    ids = sorted({request.customer_id for request in requests})
    con.execute(f"create or replace temp table {ERASED_IDS} (customer_id varchar)")
    if ids:
        con.executemany(f"insert into {ERASED_IDS} values (?)", [(i,) for i in ids])
    return len(ids)


def scrubbed(column: str, id_expression: str = "trim(customer_id)") -> str:
    """SQL for ``column`` with the value of an erased customer replaced by null."""
    return (
        f"case when {id_expression} in (select customer_id from {ERASED_IDS}) "
        f"then null else {column} end"
    )


def mentions_erased_id(column: str) -> str:
    """SQL: the text in ``column`` contains an erased customer id (for unparsed text)."""
    return (
        f"exists (select 1 from {ERASED_IDS} as erased "
        f"where contains({column}, erased.customer_id))"
    )


def record_erasure_requests(con: Any, requests: Iterable[ErasureRequest]) -> int:
    """Add new requests to ``raw.erasure_requests``; return how many are new. Idempotent: a
    request seen before keeps its first applied_at (and its compacted_at)."""
    con.execute(
        f"create table if not exists {ERASURE_TABLE} (customer_id varchar, requested_at "
        "varchar, applied_at timestamp, compacted_at timestamp)"
    )
    known = {row[0] for row in con.execute(f"select customer_id from {ERASURE_TABLE}").fetchall()}
    new = [r for r in requests if r.customer_id not in known]
    if new:
        con.executemany(
            f"insert into {ERASURE_TABLE} values (?, ?, "
            "cast(current_timestamp at time zone 'UTC' as timestamp), null)",
            [(r.customer_id, r.requested_at) for r in new],
        )
    return len(new)


def erase_from_surveys(con: Any) -> int:
    """Blank the free text of erased customers in the append-only survey tables (a survey
    file ingested before the request came keeps its rows: the answers still count, the words
    do not). Returns the number of rows changed."""
    if not _has_erasure_table(con):
        return 0
    changed = con.execute(
        f"update raw.survey_responses set comment = null where comment is not null "
        f"and trim(customer_id) in (select customer_id from {ERASURE_TABLE})"
    ).fetchone()[0]
    changed += con.execute(
        f"update raw.survey_rejects set raw_record = null where raw_record is not null "
        f"and exists (select 1 from {ERASURE_TABLE} as erased "
        "where contains(raw_record, erased.customer_id))"
    ).fetchone()[0]
    return int(changed)


def pending_erasures(con: Any) -> list[str]:
    """Ids whose request was applied to the tables but not yet compacted out of the file."""
    if not _has_erasure_table(con):
        return []
    return [
        row[0]
        for row in con.execute(
            f"select customer_id from {ERASURE_TABLE} where compacted_at is null order by 1"
        ).fetchall()
    ]


def _has_erasure_table(con: Any) -> bool:
    return bool(
        con.execute(
            "select count(*) from duckdb_tables() where schema_name = 'raw' "
            "and table_name = 'erasure_requests'"
        ).fetchone()[0]
    )


def compact_warehouse(path: Path, log=print, config: Mapping[str, str] | None = None) -> bool:
    """Rewrite the DuckDB file from its live tables when an erasure is pending; True if done.

    Replacing a table leaves its old blocks in the file until they are reused, so a value
    erased from every table could still sit in free space. A copy of the live database into
    a fresh file (``COPY FROM DATABASE``) has none of it; it replaces the old file in one
    rename. A kill before the rename leaves the old file (the request stays pending and the
    next run compacts); the half-written copy is removed first.
    """
    path = Path(path)
    fresh = path.with_name(path.name + ".compacting")
    fresh.unlink(missing_ok=True)
    with warehouse.connect(path, config=config) as con:
        pending = pending_erasures(con)
        if not pending:
            return False
        database = con.execute("select current_database()").fetchone()[0]
        con.execute(f"attach '{_sql_text(str(fresh))}' as cw_compacted")
        con.execute(f'copy from database "{database}" to cw_compacted')
        con.execute(
            "update cw_compacted.raw.erasure_requests set compacted_at = "
            "cast(current_timestamp at time zone 'UTC' as timestamp) where compacted_at is null"
        )
        con.execute("detach cw_compacted")
    os.replace(fresh, path)
    Path(str(path) + ".wal").unlink(missing_ok=True)
    log(f"Warehouse file rewritten without free space: erasure of {len(pending)} customer(s)")
    return True


def _sql_text(value: str) -> str:
    return value.replace("'", "''")
