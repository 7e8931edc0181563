"""Small, odd shops: raw folders unlike the demo data, for the job to prove it builds on them.

The demo generator (``customer_warehouse.demo``) makes one kind of shop: years of history,
thousands of customers, every optional file and column. Real first runs look different. Each
function here writes one hand-shaped shop into a folder, with only the files and columns such a
shop would export, its own id formats, local-time offsets and vocabularies:

==================  ==========================================================================
``few_weeks``       three weeks of history, 40 customers, some repeat buyers
``nobody_left``     300 customers who all still buy every week or two up to the last day
``one_time_buyers`` 250 customers over a year, each bought exactly once
``no_repeat``       every customer's orders fall on one single day (several orders that day)
``handful``         three customers, five orders, no customers file
``one_day``         the whole history is one day of orders
``only_refunds``    every order was refunded
==================  ==========================================================================

``SHOPS`` maps the name to the writer; ``write_shop(name, folder)`` writes one. Everything is
deterministic (fixed seeds), so a failure is reproducible.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path

LAST_DAY = date(2025, 6, 30)


def _write(folder: Path, name: str, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _stamp(day: date, minute_of_day: int, offset: str = "+08:00") -> str:
    moment = datetime(day.year, day.month, day.day) + timedelta(minutes=minute_of_day)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + offset


def _customers(folder: Path, ids: Sequence[str], rng: random.Random, signed_up: date) -> None:
    provinces = ["广东", "Zhejiang", "Beijing", "四川", "Hong Kong", ""]
    _write(
        folder,
        "customers",
        [
            "customer_id",
            "signed_up_at",
            "province",
            "marketing_consent",
            "birth_date",
            "email",
            "phone",
        ],
        [
            (
                cid,
                (signed_up - timedelta(days=rng.randint(0, 30))).isoformat(),
                rng.choice(provinces),
                rng.choice(["yes", "no", ""]),
                rng.choice(
                    ["", f"19{rng.randint(50, 99)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"]
                ),
                rng.choice(["", f"{cid.lower()}@shop.example"]),
                rng.choice(["", f"139{rng.randint(10_000_000, 99_999_999)}"]),
            )
            for cid in ids
        ],
    )


ORDER_HEADER = ["order_id", "customer_id", "ordered_at", "amount", "channel", "status"]


def few_weeks(folder: Path) -> None:
    rng = random.Random(1)
    start = LAST_DAY - timedelta(days=20)
    ids = [f"FW-{i:03d}" for i in range(40)]
    rows, n = [], 0
    for cid in ids:
        for _ in range(rng.choice([1, 1, 2, 3])):
            day = start + timedelta(days=rng.randint(0, 20))
            n += 1
            amount = f"{rng.uniform(20, 400):.2f}"
            channel = rng.choice(["app", "web"])
            rows.append((f"fw{n}", cid, _stamp(day, rng.randint(0, 1439)), amount, channel, "paid"))
    _write(folder, "orders", ORDER_HEADER, rows)
    _customers(folder, ids, rng, start)


def nobody_left(folder: Path) -> None:
    rng = random.Random(2)
    start = LAST_DAY - timedelta(days=180)
    ids = [str(100000 + i) for i in range(300)]
    rows, n = [], 0
    for cid in ids:
        day = start + timedelta(days=rng.randint(0, 14))
        while day <= LAST_DAY:
            n += 1
            rows.append((f"{n}", cid, _stamp(day, rng.randint(480, 1200), "Z"),
                         f"{rng.uniform(50, 120):.2f}", "store", "completed"))  # fmt: skip
            day += timedelta(days=rng.randint(5, 14))
        # Everyone's last order is within the last two weeks: nobody has dropped out.
        n += 1
        last = LAST_DAY - timedelta(days=rng.randint(0, 13))
        rows.append((f"{n}", cid, _stamp(last, 600, "Z"), "88.00", "store", "completed"))
    _write(folder, "orders", ORDER_HEADER, rows)
    _customers(folder, ids, rng, start)


def one_time_buyers(folder: Path) -> None:
    rng = random.Random(3)
    ids = [f"otb_{i}" for i in range(250)]
    rows = [
        (f"A{i:05d}", cid, _stamp(LAST_DAY - timedelta(days=rng.randint(0, 364)), 720),
         f"{rng.uniform(10, 900):.2f}", rng.choice(["online", "store", "phone"]), "completed")
        for i, cid in enumerate(ids)
    ]  # fmt: skip
    _write(folder, "orders", ORDER_HEADER, rows)
    _customers(folder, ids, rng, LAST_DAY - timedelta(days=400))


def no_repeat(folder: Path) -> None:
    rng = random.Random(4)
    ids = [f"nr{i}" for i in range(60)]
    rows, n = [], 0
    for cid in ids:
        day = LAST_DAY - timedelta(days=rng.randint(0, 200))
        for _ in range(rng.randint(1, 4)):
            n += 1
            rows.append((f"NR{n}", cid, _stamp(day, rng.randint(0, 900)),
                         f"{rng.uniform(5, 60):.2f}", "app", "completed"))  # fmt: skip
    _write(folder, "orders", ORDER_HEADER, rows)
    _customers(folder, ids, rng, LAST_DAY - timedelta(days=300))


def handful(folder: Path) -> None:
    rows = [
        ("h1", "alice", "2025-06-01 09:00:00", "120.00", "store", "completed"),
        ("h2", "alice", "2025-06-20 09:00:00", "80.00", "store", "completed"),
        ("h3", "bob", "2025-05-15 18:30:00", "45.50", "app", "completed"),
        ("h4", "carol", "2025-06-29 12:00:00", "300.00", "phone", "refunded"),
        ("h5", "carol", "2025-06-30 12:00:00", "299.99", "phone", "completed"),
    ]
    _write(folder, "orders", ORDER_HEADER, rows)


def one_day(folder: Path) -> None:
    rng = random.Random(6)
    ids = [f"d{i}" for i in range(30)]
    rows = [
        (f"OD{i}", rng.choice(ids), _stamp(LAST_DAY, 60 + 20 * i, "+00:00"),
         f"{rng.uniform(1, 99):.2f}", "store", "completed")
        for i in range(45)
    ]  # fmt: skip
    _write(folder, "orders", ORDER_HEADER, rows)
    _customers(folder, ids, rng, LAST_DAY)


def only_refunds(folder: Path) -> None:
    rng = random.Random(7)
    ids = [f"r{i}" for i in range(12)]
    rows = []
    for i in range(20):
        day = LAST_DAY - timedelta(days=rng.randint(1, 90))
        rows.append((f"R{i}", rng.choice(ids), _stamp(day, 700), f"{rng.uniform(10, 99):.2f}",
                     "app", "refunded"))  # fmt: skip
    _write(folder, "orders", ORDER_HEADER, rows)
    _customers(folder, ids, rng, LAST_DAY - timedelta(days=120))


SHOPS: dict[str, Callable[[Path], None]] = {
    "few_weeks": few_weeks,
    "nobody_left": nobody_left,
    "one_time_buyers": one_time_buyers,
    "no_repeat": no_repeat,
    "handful": handful,
    "one_day": one_day,
    "only_refunds": only_refunds,
}


def write_shop(name: str, folder: Path) -> Path:
    SHOPS[name](folder)
    return folder
