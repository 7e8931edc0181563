"""Writing: CSV or Parquet tables (appended chunk by chunk), the survey files and the truth
of every customer."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from customer_warehouse.demo.params import FORMATS, SURVEY_COLUMNS, TABLE_FILES, TRUTH_FILES
from customer_warehouse.demo.simulation import Buyers, Customers
from customer_warehouse.demo.text import digits


class TableWriter:
    """Append string tables to one CSV or Parquet file."""

    LOW_CARDINALITY = (
        "currency",
        "channel",
        "status",
        "quantity",
        "product_id",
        "country",
        "province",
        "city",
        "gender",
        "acquisition_channel",
        "marketing_consent",
        "category",
    )

    def __init__(self, path: Path, columns: Sequence[str], fmt: str) -> None:
        self.schema = pa.schema([(name, pa.string()) for name in columns])
        self.fmt = fmt
        self.rows = 0
        if fmt == "csv":
            self._writer: Any = pacsv.CSVWriter(str(path), self.schema)
        else:
            self._writer = pq.ParquetWriter(
                str(path),
                self.schema,
                compression="snappy",
                write_statistics=False,
                use_dictionary=[c for c in columns if c in self.LOW_CARDINALITY],
            )

    def write(self, table: pa.Table) -> None:
        table = table.cast(self.schema)
        self.rows += table.num_rows
        if self.fmt == "csv":
            self._writer.write_table(table)
        elif table.num_rows:
            self._writer.write_table(table, row_group_size=max(table.num_rows, 1))

    def close(self) -> None:
        self._writer.close()


def write_chunk(
    order_writer: TableWriter,
    orders: pa.Table,
    item_writer: TableWriter | None,
    items: pa.Table | None,
) -> None:
    order_writer.write(orders)
    if item_writer is not None and items is not None:
        item_writer.write(items)


def remove_previous(out: Path) -> None:
    for name in TABLE_FILES:
        for fmt in FORMATS:
            (out / f"{name}.{fmt}").unlink(missing_ok=True)
    surveys = out / "surveys"
    if surveys.is_dir():
        for path in list(surveys.glob("responses_*.csv")) + list(surveys.glob("responses_*.json")):
            path.unlink()
    for name in TRUTH_FILES:
        (out / "truth" / name).unlink(missing_ok=True)


def write_small_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_whole(path: Path, table: pa.Table, fmt: str) -> None:
    writer = TableWriter(path, table.column_names, fmt)
    writer.write(table)
    writer.close()


def write_surveys(out: Path, responses: list[dict[str, Any]]) -> list[str]:
    """Quarterly files; every third quarter is JSON (a list of objects) instead of CSV."""
    folder = out / "surveys"
    folder.mkdir(parents=True, exist_ok=True)
    by_quarter: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for response in responses:
        by_quarter.setdefault(response["_quarter"], []).append(response)
    written = []
    for (year, quarter), rows in sorted(by_quarter.items()):
        stem = f"responses_{year}_q{quarter}"
        records = [{k: v for k, v in row.items() if k != "_quarter"} for row in rows]
        if (year * 4 + quarter) % 3 == 0:
            path = folder / f"{stem}.json"
            text = "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n"
            path.write_text(text, encoding="utf-8")
        else:
            path = folder / f"{stem}.csv"
            write_small_csv(
                path,
                SURVEY_COLUMNS,
                [
                    [r[c] if c != "need_tags" else "|".join(r[c]) for c in SURVEY_COLUMNS]
                    for r in records
                ],
            )
        written.append(path.name)
    return written


def write_truth_customers(
    path: Path, customers: Customers, buyers: Buyers, start_epoch_day: int
) -> None:
    """Latent values per customer, in customer-id order; purchase fields are null for
    prospects."""
    n = customers.n
    slot = np.full(n, -1, dtype=np.int64)
    slot[buyers.index] = np.arange(len(buyers.index))
    order = np.argsort(customers.number)
    s = slot[order]
    buyer = s >= 0
    si = np.where(buyer, s, 0)

    def column(values: np.ndarray, kind: pa.DataType, valid: np.ndarray | None = None) -> pa.Array:
        """A per-buyer array in customer order; null for prospects (and where not valid)."""
        if len(values) == 0:
            return pa.nulls(n, kind)
        keep = buyer if valid is None else buyer & valid[si]
        return pa.array(values[si], kind, mask=~keep)

    draw = buyers.draw
    counts = draw.repeat_purchases
    dropout_day = np.full(len(counts), -1, dtype=np.int64)
    if len(draw.repeat_times):
        last = np.cumsum(counts) - 1
        has = counts > 0
        last_time = np.zeros(len(counts))
        last_time[has] = draw.repeat_times[last[has]]
        dropout_day = np.floor(buyers.t0 + last_time).astype(np.int64)
    dropped = draw.dropped_out
    table = pa.table(
        {
            "customer_id": digits(customers.number[order], 7, "C"),
            "is_prospect": pa.array(~buyer),
            "lambda_per_day": column(buyers.lam, pa.float64()),
            "p_dropout": column(buyers.p, pa.float64()),
            "nu": column(buyers.nu, pa.float64()),
            "first_purchase_date": column(
                (start_epoch_day + buyers.first_day).astype(np.int32), pa.date32()
            ),
            "observation_days": column(buyers.T, pa.float64()),
            "repeat_purchases": column(counts, pa.int64()),
            "repeat_purchase_days": column(buyers.repeat_days, pa.int64()),
            "dropped_out": column(dropped, pa.bool_()),
            "dropout_date": column(
                (start_epoch_day + dropout_day).astype(np.int32), pa.date32(), valid=dropped
            ),
        }
    )
    pq.write_table(table, str(path))
