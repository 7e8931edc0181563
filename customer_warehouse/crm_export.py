"""CRM contact lists: the one way contact details leave the warehouse.

Reads ``marts.crm_reminders`` (who gets which reminder, consent already applied by the contact
rule) and ``intermediate.int_customer_contacts_filtered_to_consent`` (the one address per
customer, only with marketing consent). Writes, under ``CW_EXPORT_DIR`` (default
``data/exports``), one CSV per reminder list and as-of date::

    crm/<as-of date>/<reminder_type>.csv

Columns (``EXPORT_COLUMNS``): customer_id and customer_key (the pseudonym BI tables carry, so
the CRM can match both worlds), the reminder, its due date and reason, the channel and the
address, the customer's tier, stage, level and recommended action. A customer without consent
or without an address is never in a file. Files are readable by their owner only (0600, the
folders 0700), written to a temporary name and renamed, so a reader never sees half a file and
a rerun for the same date replaces its own files. The BI serving copy never carries addresses.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from customer_warehouse import privacy

REMINDERS_TABLE = "marts.crm_reminders"
CONTACTS_TABLE = "intermediate.int_customer_contacts_filtered_to_consent"
EXPORT_COLUMNS = (
    "customer_id",
    "customer_key",
    "reminder_type",
    "due_date",
    "reason",
    "contact_channel",
    "contact_address",
    "value_tier",
    "lifecycle_stage",
    "membership_level",
    "recommended_action",
)
FOLDER_MODE = 0o700
FILE_MODE = 0o600


@dataclass(frozen=True)
class ExportedList:
    reminder_type: str
    path: Path
    rows: int


def _owner_only_folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, FOLDER_MODE)
    return path


def _write_atomically(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temporary, FILE_MODE)
    os.replace(temporary, path)


def export_contact_lists(
    con: duckdb.DuckDBPyConnection,
    export_dir: Path,
    as_of: date,
    key: bytes,
    log: Callable[[str], None] = print,
) -> list[ExportedList]:
    """Write one owner-only CSV per reminder type due on ``as_of``; return what was written.

    A list nobody is on that day has no file. Files of earlier dates stay (each date has its
    own folder); a rerun for the same date replaces that date's files and removes a list that
    is now empty.
    """
    rows = con.execute(
        f"""
        select
            reminders.customer_id,
            reminders.reminder_type,
            reminders.due_date,
            reminders.reason,
            reminders.contact_channel,
            contacts.contact_address,
            reminders.value_tier,
            reminders.lifecycle_stage,
            reminders.membership_level,
            reminders.recommended_action
        from {REMINDERS_TABLE} as reminders
        inner join {CONTACTS_TABLE} as contacts
            on reminders.customer_id = contacts.customer_id
        order by reminders.reminder_type, reminders.due_date, reminders.customer_id
        """
    ).fetchall()
    folder = _owner_only_folder(_owner_only_folder(export_dir / "crm") / as_of.isoformat())
    by_type: dict[str, list[tuple]] = {}
    for customer_id, kind, *rest in rows:
        due_date, reason, channel, address, *profile = rest
        by_type.setdefault(kind, []).append(
            (customer_id, privacy.pseudonym(key, customer_id), kind, due_date.isoformat(),
             reason, channel, address, *profile)
        )  # fmt: skip
    written = []
    for kind, kind_rows in sorted(by_type.items()):
        path = folder / f"{kind}.csv"
        _write_atomically(path, EXPORT_COLUMNS, kind_rows)
        written.append(ExportedList(kind, path, len(kind_rows)))
        log(f"CRM list {kind}: {len(kind_rows)} customer(s) → {path}")
    for stale in folder.glob("*.csv"):
        if stale.stem not in by_type:
            stale.unlink()
    return written


def erase_customers(export_dir: Path, customer_ids: set[str], log=print) -> int:
    """Remove the rows of erased customers from every contact list ever written (all dates),
    each file rewritten owner-only and atomically. Returns the number of rows removed."""
    removed = 0
    for path in sorted((export_dir / "crm").glob("*/*.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = tuple(next(reader, ()))
            rows = list(reader)
        if "customer_id" not in header:
            continue
        position = header.index("customer_id")
        kept = [row for row in rows if row[position] not in customer_ids]
        if len(kept) != len(rows):
            _write_atomically(path, header, kept)
            removed += len(rows) - len(kept)
    if removed:
        log(f"Erasure: {removed} row(s) removed from the CRM contact lists in {export_dir}")
    return removed
