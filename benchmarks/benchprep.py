"""Data preparation for ``make bench`` (``benchmarks/bench_warehouse.py``; tested in
``tests/test_bench.py``): scales (orders and customers) and the daily delivery (about 1 % new
orders, some late, some status changes) added to a raw folder.

Deterministic given its inputs; nothing here measures anything.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb

PROJECT_DIR = Path(__file__).resolve().parents[1]


def _sql_text(value: str) -> str:
    """``value`` as a SQL string literal (also used by ``benchmeasure``)."""
    return "'" + value.replace("'", "''") + "'"


# --------------------------------------------------------------------------------------------
# Scales
# --------------------------------------------------------------------------------------------

#: Orders per customer the demo generator produces (20,699 orders for 2,000 customers, seed 42;
#: 10,063,726 for 1,000,000): how many customers make a scale of N orders.
ORDERS_PER_CUSTOMER = 10.2
_SCALE = re.compile(r"^(\d+(?:\.\d+)?)([kKmM]?)$")


def parse_scale(text: str) -> int:
    """``100k`` → 100000, ``1m`` / ``1M`` → 1000000, ``500`` → 500 (orders)."""
    match = _SCALE.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a scale: use a number of orders like 500, 100k or 10m")
    factor = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
    orders = int(round(float(match.group(1)) * factor))
    if orders < 1:
        raise ValueError(f"{text!r}: a scale needs at least one order")
    return orders


def scale_label(orders: int) -> str:
    """1000000 → ``1M``, 100000 → ``100k``, 500 → ``500``."""
    for factor, suffix in ((1_000_000, "M"), (1_000, "k")):
        if orders >= factor and orders % (factor // 10) == 0:
            value = orders / factor
            return f"{value:g}{suffix}"
    return str(orders)


def customers_for(orders: int) -> int:
    """Demo customers that give about ``orders`` orders."""
    return max(1, round(orders / ORDERS_PER_CUSTOMER))


# --------------------------------------------------------------------------------------------
# The daily delivery: about 1 % new orders, some late, some status changes
# --------------------------------------------------------------------------------------------

DELIVERIES_FOLDER = "orders"


def loader_supports_deliveries(
    load: Callable[[duckdb.DuckDBPyConnection, Path], Any] | None = None,
) -> tuple[bool, str]:
    """Does the raw loader read an ``orders/`` folder of deliveries (docs/raw-data.md)? Asked
    of the loader itself: a folder holding only ``orders/2025-01-14.csv`` with one order is
    loaded into an in-memory DuckDB; one row in ``raw.orders`` means yes. Any error (today's
    loader: "has no orders.csv or orders.parquet") means no, with the reason."""
    if load is None:
        from customer_warehouse import ingestion

        def load(con: duckdb.DuckDBPyConnection, folder: Path) -> Any:
            return ingestion.load_raw(con, folder, log=lambda _: None, encodings={}, erasures=[])

    with tempfile.TemporaryDirectory(prefix="cw-bench-probe-") as folder:
        raw = Path(folder)
        (raw / DELIVERIES_FOLDER).mkdir()
        (raw / DELIVERIES_FOLDER / "2025-01-14.csv").write_text(
            "order_id,customer_id,ordered_at,amount,status,status_changed_at\n"
            "P1,C1,2025-01-14 10:00:00,10.00,completed,\n"
        )
        try:
            with duckdb.connect() as con:
                load(con, raw)
                rows = con.execute("select count(*) from raw.orders").fetchone()[0]
        except Exception as exc:  # the probe answers "no" for any failure, with the reason
            text = str(exc).strip().replace(str(raw), "<probe folder>")
            first = text.splitlines()[0].split(". ")[0] if text else type(exc).__name__
            return False, f"{type(exc).__name__}: {first}"
    if rows != 1:
        return False, f"the loader read {rows} rows from one delivery of one order"
    return True, "the loader reads orders/<date>.csv deliveries"


@dataclass
class Delivery:
    mode: str  # "delivery" (a new file in orders/) or "full_rerun" (the single file rewritten)
    path: Path
    delivery_date: date
    new_orders: int
    late_orders: int
    status_changes: int
    total_orders_after: int
    notes: list[str] = field(default_factory=list)


def orders_files(raw_dir: Path) -> list[Path]:
    """The raw orders: the single export, or the files of the deliveries folder."""
    singles = [raw_dir / f"orders{suffix}" for suffix in (".parquet", ".csv")]
    found = [p for p in singles if p.is_file()]
    folder = raw_dir / DELIVERIES_FOLDER
    if folder.is_dir():
        found += sorted(p for p in folder.iterdir() if p.suffix in (".parquet", ".csv"))
    return found


def _relation(files: Sequence[Path]) -> str:
    parquet = [p for p in files if p.suffix == ".parquet"]
    if len(parquet) != len(files):
        raise ValueError("the benchmark's daily delivery works on Parquet orders only")
    return "read_parquet([" + ", ".join(_sql_text(str(p)) for p in parquet) + "])"


#: Order days the warehouse accepts (docs/raw-data.md): not before 1970, not after today. The
#: demo data's dirty rows include orders dated decades ahead; the next delivery follows the
#: last real order day, not those.
_PLAUSIBLE_DAYS = """
    select cast(try_cast(ordered_at as timestamptz) as date) as day from {source}
    where cast(try_cast(ordered_at as timestamptz) as date)
        between date '1970-01-01' and current_date
"""


def to_deliveries_layout(raw_dir: Path) -> Path:
    """Move the single ``orders.parquet`` into ``orders/<last order date>.parquet``: the whole
    history as the first delivery (done before the full run, so both runs see one layout)."""
    single = raw_dir / "orders.parquet"
    with duckdb.connect() as con:
        source = f"read_parquet({_sql_text(str(single))})"
        last = con.execute(
            f"select max(day) from ({_PLAUSIBLE_DAYS.format(source=source)})"
        ).fetchone()[0]
    folder = raw_dir / DELIVERIES_FOLDER
    folder.mkdir(exist_ok=True)
    target = folder / f"{last.isoformat()}.parquet"
    os.replace(single, target)
    return target


def add_daily_orders(
    raw_dir: Path,
    *,
    deliveries: bool,
    fraction: float = 0.01,
    late_share: float = 0.1,
    status_change_fraction: float = 0.001,
    seed: int = 7,
) -> Delivery:
    """The next day's orders: ``fraction`` of the existing orders as new ones (copies of
    random completed orders with new ids, on the day after the last order; ``late_share`` of
    them dated one to seven days earlier, arriving late), and ``status_change_fraction`` of the
    orders of the last 60 days turned ``refunded`` with ``status_changed_at`` on that day.

    ``deliveries``: written as a new file ``orders/<day>.parquet`` holding the new orders and
    the changed orders again (the latest delivery wins). Otherwise the single export is
    rewritten as a full export of that day: changed rows in place, new rows appended.
    """
    files = orders_files(raw_dir)
    with duckdb.connect() as con:
        con.execute(f"create table existing as select * from {_relation(files)}")
        total = con.execute("select count(*) from existing").fetchone()[0]
        last_day = con.execute(
            f"select max(day) from ({_PLAUSIBLE_DAYS.format(source='existing')})"
        ).fetchone()[0]
        day = last_day + timedelta(days=1)
        con.execute("select setseed(?)", [(seed % 1000) / 1000])
        _pick_new_orders(con, day, max(1, round(total * fraction)), late_share, seed)
        _pick_refunds(con, day, max(1, round(total * status_change_fraction)), seed + 1)
        late = con.execute("select count(*) from fresh where is_late").fetchone()[0]
        new_rows = con.execute("select count(*) from fresh").fetchone()[0]
        changes = con.execute("select count(*) from changed").fetchone()[0]
        if deliveries:
            target = raw_dir / DELIVERIES_FOLDER / f"{day.isoformat()}.parquet"
        else:
            target = files[0]
        _write_orders(con, target, full_export=not deliveries)
    return Delivery(
        mode="delivery" if deliveries else "full_rerun",
        path=target,
        delivery_date=day,
        new_orders=int(new_rows),
        late_orders=int(late),
        status_changes=int(changes),
        total_orders_after=int(total + new_rows),
    )


def _pick_new_orders(
    con: duckdb.DuckDBPyConnection, day: date, count: int, late_share: float, seed: int
) -> None:
    """Table ``fresh``: ``count`` completed orders copied with new ids onto ``day``; one in
    ``1 / late_share`` of them dated one to seven days earlier (``is_late``)."""
    every = max(1, round(1 / late_share))
    con.execute(
        f"""
        create table fresh as
        with picked as (
            select *, row_number() over () as n
            from (select * from existing
                  where coalesce(status, 'completed') = 'completed'
                    and try_cast(ordered_at as timestamptz) is not null)
            using sample reservoir({int(count)} rows) repeatable ({int(seed)})
        )
        select
            'D' || strftime(?::date, '%Y%m%d') || '-' || lpad(cast(n as varchar), 9, '0')
                as order_id,
            customer_id,
            strftime(
                ?::date - cast(case when n % {every} = 0 then 1 + n % 7 else 0 end as integer)
                + to_seconds(cast(n * 7919 % 86400 as bigint)),
                '%Y-%m-%dT%H:%M:%S+00:00'
            ) as ordered_at,
            amount, currency, channel, 'completed' as status,
            cast(null as varchar) as status_changed_at, discount_amount,
            n % {every} = 0 as is_late
        from picked
        """,
        [day, day],
    )


def _pick_refunds(con: duckdb.DuckDBPyConnection, day: date, count: int, seed: int) -> None:
    """Table ``changed``: ``count`` completed orders of the 60 days before ``day`` (one row
    per id), turned ``refunded`` at noon of ``day``."""
    con.execute(
        f"""
        create table changed as
        select * replace (
            'refunded' as status,
            strftime(?::date + interval 12 hour, '%Y-%m-%dT%H:%M:%S+00:00')
                as status_changed_at
        )
        from (
            select * from existing
            where coalesce(status, 'completed') = 'completed'
              and cast(try_cast(ordered_at as timestamptz) as date)
                  between ?::date - 60 and ?::date - 1
              -- one row per id: a re-sent order replaces exactly that order
              and order_id in (
                  select order_id from existing group by order_id having count(*) = 1
              )
        ) using sample reservoir({int(count)} rows) repeatable ({int(seed)})
        """,
        [day, day, day],
    )


def _write_orders(con: duckdb.DuckDBPyConnection, target: Path, *, full_export: bool) -> None:
    """A delivery holds ``fresh`` and ``changed``; a full export is every existing order
    with the changed ones replaced, plus ``fresh``. Written to a scratch file, then renamed."""
    columns = [row[0] for row in con.execute("describe existing").fetchall()]
    select = ", ".join(f'"{c}"' for c in columns)
    sql = f"select {select} from fresh union all select {select} from changed"
    if full_export:
        sql = f"""
            select {select} from existing as e
            where not exists (select 1 from changed as c where c.order_id = e.order_id)
            union all select {select} from changed
            union all select {select} from fresh
        """
    scratch = target.with_name(f".{target.name}.partial")
    con.execute(f"copy ({sql}) to {_sql_text(str(scratch))} (format parquet)")
    os.replace(scratch, target)


def copy_tree_fresh(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source`` (replaced when it exists)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
