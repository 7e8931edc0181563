"""Finding a source's files in CW_RAW_DIR: one full export or a folder of deliveries, in
delivery order, and their content hash. Reads the folder listing and the files' bytes; writes
nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from customer_warehouse.ingestion.contract import (
    CHUNK_BYTES,
    DELIVERY_SUFFIXES,
    RawDataError,
    SourceSpec,
)


@dataclass(frozen=True)
class DeliveryFile:
    """One file of a source: the full export (`orders.csv`) or one delivery (`orders/<x>.csv`)."""

    source: str
    path: Path
    name: str  # as kept in `_source_file` and raw.deliveries: `orders.csv`, `orders/2025-01-14.csv`
    delivery: str  # the delivery's sort label (`_delivery`): the file name without its suffix


def find_source_file(raw_dir: Path, spec: SourceSpec) -> Path | None:
    """`<name>.csv` or `<name>.parquet`; both at once is ambiguous and refused."""
    candidates = [raw_dir / f"{spec.name}.{ext}" for ext in ("csv", "parquet")]
    present = [path for path in candidates if path.is_file()]
    if len(present) > 1:
        raise RawDataError(
            f"{raw_dir}: both {present[0].name} and {present[1].name} exist. Keep one of them: "
            "the warehouse cannot tell which export is current."
        )
    if not present and spec.required_file and not (raw_dir / spec.name).is_dir():
        raise RawDataError(
            f"{raw_dir} has no {spec.name}.csv or {spec.name}.parquet (nor a folder "
            f"{spec.name}/ of deliveries). It is the one file the warehouse needs (columns: "
            + ", ".join(spec.required)
            + "); see docs/raw-data.md, or unset CW_RAW_DIR to use the demo data."
        )
    return present[0] if present else None


def find_deliveries(raw_dir: Path, spec: SourceSpec) -> tuple[list[DeliveryFile], list[str]]:
    """The source's files in delivery order, and the names in its folder that are ignored.

    Either one full export (`orders.csv` or `orders.parquet`: one delivery) or a folder
    `orders/` whose `*.csv` / `*.parquet` files are deliveries, ordered by name (a date, or any
    label that sorts in delivery order). Hidden files (`.part`, `.DS_Store`) and other suffixes
    are ignored and reported. Both layouts at once, or two files with one name, are refused.
    """
    single = find_source_file(raw_dir, spec)
    folder = raw_dir / spec.name
    if single is not None and folder.is_dir():
        raise RawDataError(
            f"{raw_dir}: both {single.name} and the folder {spec.name}/ exist. The warehouse "
            f"reads either one full export ({spec.name}.csv or .parquet) or deliveries over "
            f"time ({spec.name}/<date>.csv or .parquet), not both, so it cannot tell which rows "
            f"are current. Fix: to keep {single.name} as the first delivery, move it into "
            f"{spec.name}/ under a name that sorts before every delivery (e.g. "
            f"{spec.name}/0000-00-00{single.suffix}); otherwise delete the one you do not want."
        )
    if single is not None:
        return [DeliveryFile(spec.name, single, single.name, single.stem)], []
    if not folder.is_dir():
        return [], []
    files: dict[str, Path] = {}
    ignored: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() not in DELIVERY_SUFFIXES:
            ignored.append(f"{spec.name}/{path.name}")
            continue
        if path.stem in files:
            raise RawDataError(
                f"{folder}: both {files[path.stem].name} and {path.name} are the delivery "
                f"{path.stem}. Keep one of them: the warehouse cannot tell which is current."
            )
        files[path.stem] = path
    if not files and spec.required_file:
        raise RawDataError(
            f"{folder} holds no delivery (a .csv or .parquet file). The orders are the one "
            "thing the warehouse needs: put the exports there (docs/raw-data.md), or remove "
            f"the empty folder and give {spec.name}.csv."
        )
    deliveries = [
        DeliveryFile(spec.name, path, f"{spec.name}/{path.name}", stem)
        for stem, path in sorted(files.items())
    ]
    return deliveries, ignored


def file_sha256(path: Path) -> str:
    """SHA-256 of the file's bytes, hex (streamed)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


@contextmanager
def delivery_named(file: DeliveryFile) -> Iterator[None]:
    """A delivery in a folder is named with its folder in messages (`orders/2025-01-14.csv`)."""
    try:
        yield
    except RawDataError as exc:
        text = str(exc)
        if file.name != file.path.name and text.startswith(file.path.name):
            raise RawDataError(file.name + text[len(file.path.name) :]) from None
        raise


def delivery_named_log(file: DeliveryFile, log: Callable[[str], None]) -> Callable[[str], None]:
    if file.name == file.path.name:
        return log

    def named(line: str) -> None:
        log(file.name + line[len(file.path.name) :] if line.startswith(file.path.name) else line)

    return named
