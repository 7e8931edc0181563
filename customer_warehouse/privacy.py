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
from pathlib import Path

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
