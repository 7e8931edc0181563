"""The parts of ``make bench`` that are worth testing (``tests/test_bench.py``): scales, the
floor query, process-tree sampling, dbt timings, the daily delivery, ratios and the generated
section of docs/benchmarks.md. ``benchmarks/bench_warehouse.py`` runs them.

Nothing here measures anything by itself; every function is deterministic given its inputs
(the sampler reads /proc).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb

PROJECT_DIR = Path(__file__).resolve().parents[1]

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
# Process-tree sampling (CPU time and resident memory of a process and its descendants)
# --------------------------------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Sample:
    at: float  # epoch seconds
    cpu_s: float  # CPU time of the tree so far (user + system, reaped children included)
    rss_bytes: int  # resident memory of the live processes of the tree


def _stat_fields(pid: int, proc: Path) -> list[str] | None:
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command (field 2) may hold spaces and parentheses: split after the last ')'.
    return text.rsplit(")", 1)[1].split()


def tree_usage(root: int, proc: Path = Path("/proc")) -> tuple[float, int] | None:
    """(CPU seconds, resident bytes) of ``root`` and every live descendant, or None when root
    is gone. A child that ended and was waited for is in its parent's cutime/cstime, a live one
    in its own utime/stime: summed over the live tree, each CPU second counts once."""
    parents: dict[int, int] = {}
    fields_of: dict[int, list[str]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name), proc)
        if fields is None:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        fields_of[pid] = fields
    if root not in fields_of:
        return None
    tree = {root}
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                changed = True
    cpu = rss = 0
    for pid in tree:
        fields = fields_of[pid]
        # fields[0] is the state; utime, stime, cutime, cstime are fields 14-17 of stat.
        cpu += sum(int(value) for value in fields[11:15])
        rss += int(fields[21]) * _PAGE_SIZE
    return cpu / _CLOCK_TICKS, rss


class TreeSampler:
    """Samples :func:`tree_usage` of a process every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.5, proc: Path = Path("/proc")):
        self.pid, self.interval, self.proc = pid, interval, proc
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            usage = tree_usage(self.pid, self.proc)
            if usage is not None:
                self.samples.append(Sample(time.time(), usage[0], usage[1]))
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _cpu_at(samples: Sequence[Sample], moment: float) -> float:
    """CPU of the tree at ``moment``, linearly between the two samples around it."""
    if not samples:
        return 0.0
    if moment <= samples[0].at:
        return samples[0].cpu_s
    for before, after in zip(samples, samples[1:], strict=False):
        if before.at <= moment <= after.at:
            span = after.at - before.at
            share = 0.0 if span <= 0 else (moment - before.at) / span
            return before.cpu_s + share * (after.cpu_s - before.cpu_s)
    return samples[-1].cpu_s


def window_usage(samples: Sequence[Sample], start: float, end: float) -> tuple[float, int]:
    """(CPU seconds, peak resident bytes) of the tree between ``start`` and ``end``. A window
    shorter than the sampling interval takes the nearest sample's memory."""
    cpu = max(0.0, _cpu_at(samples, end) - _cpu_at(samples, start))
    inside = [s.rss_bytes for s in samples if start <= s.at <= end]
    if not inside and samples:
        nearest = min(samples, key=lambda s: abs(s.at - (start + end) / 2))
        inside = [nearest.rss_bytes]
    return cpu, max(inside, default=0)


# --------------------------------------------------------------------------------------------
# dbt: per-model timings from run_results.json
# --------------------------------------------------------------------------------------------

#: The marts whose models (and everything upstream of them) are "features and tiers".
FEATURES_TIERS_MODELS = (
    "model.customer_warehouse.customer_features",
    "model.customer_warehouse.customer_tiers",
)


def node_seconds(run_results: Mapping[str, Any], prefix: str = "model.") -> dict[str, float]:
    """``{unique_id: execution seconds}`` of the nodes whose id starts with ``prefix``."""
    return {
        result["unique_id"]: float(result.get("execution_time") or 0.0)
        for result in run_results.get("results", [])
        if result["unique_id"].startswith(prefix)
    }


def upstream_models(manifest: Mapping[str, Any], roots: Iterable[str]) -> set[str]:
    """``roots`` and every model they depend on, directly or not (seeds and sources left out)."""
    nodes = manifest["nodes"]
    seen: set[str] = set()
    todo = [root for root in roots if root in nodes]
    while todo:
        node = todo.pop()
        if node in seen or not node.startswith("model."):
            continue
        seen.add(node)
        todo.extend((nodes[node].get("depends_on") or {}).get("nodes") or [])
    return seen


def features_tiers_seconds(
    run_results: Mapping[str, Any], manifest: Mapping[str, Any]
) -> tuple[float, int]:
    """(summed execution seconds, number of models) of the models that build
    customer_features and customer_tiers. dbt runs two at a time, so the sum is the CPU-ish
    cost, at most twice the wall time of that part of the build."""
    seconds = node_seconds(run_results)
    models = upstream_models(manifest, FEATURES_TIERS_MODELS) & set(seconds)
    return sum(seconds[m] for m in models), len(models)


def slowest_nodes(run_results: Mapping[str, Any], n: int = 8) -> list[tuple[str, float]]:
    """The ``n`` slowest nodes of any kind: (short name, seconds)."""
    pairs = node_seconds(run_results, prefix="")
    ranked = sorted(pairs.items(), key=lambda item: -item[1])[:n]
    return [(unique_id.split(".", 2)[-1], round(seconds, 2)) for unique_id, seconds in ranked]


# --------------------------------------------------------------------------------------------
# The floor: one hand-written DuckDB query over the raw orders file
# --------------------------------------------------------------------------------------------


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def floor_sql(orders_file: Path, rates_csv: Path = PROJECT_DIR / "seeds" / "currency_rates.csv"):
    """The core RFM features per customer from the raw orders file, as the warehouse defines
    them (docs/tiers.md): completed orders are purchases, amounts in the reporting currency,
    purchase days in UTC; frequency = purchase days - 1, recency = last - first purchase day,
    tenure = as-of date (the last purchase day) - first purchase day, monetary value = average
    revenue per repeat purchase day (the first day excluded; 0 without repeat days). No
    cleaning beyond what a cast refuses and the contract's plausible dates (an order dated
    2101 would move everyone's tenure): the rest is the staging layer's work, not the floor's."""
    reader = (
        f"read_parquet({_sql_text(str(orders_file))})"
        if orders_file.suffix == ".parquet"
        else f"read_csv({_sql_text(str(orders_file))}, all_varchar = true, header = true)"
    )
    return f"""
create or replace table floor_rfm as
with rates as (
    select upper(currency) as currency, cast(rate_to_reporting as decimal(18, 6)) as rate
    from read_csv({_sql_text(str(rates_csv))}, header = true, all_varchar = true)
),
purchases as (
    select
        o.customer_id,
        cast(timezone('UTC', try_cast(o.ordered_at as timestamptz)) as date) as purchase_day,
        try_cast(o.amount as decimal(18, 2)) * coalesce(r.rate, 1) as amount
    from {reader} as o
    left join rates as r on r.currency = upper(coalesce(nullif(trim(o.currency), ''), 'CNY'))
    where lower(coalesce(nullif(trim(o.status), ''), 'completed')) = 'completed'
),
days as (
    select customer_id, purchase_day, sum(amount) as revenue
    from purchases
    where customer_id is not null and amount >= 0
      -- the contract's plausible dates: not before 1970, not after the run
      and purchase_day between date '1970-01-01' and current_date
    group by customer_id, purchase_day
),
as_of as (select max(purchase_day) as as_of_date from days)
select
    customer_id,
    count(*) - 1 as frequency,
    max(purchase_day) - min(purchase_day) as recency_days,
    any_value(as_of.as_of_date) - min(purchase_day) as tenure_days,
    sum(revenue) as revenue,
    coalesce(
        (sum(revenue) - arg_min(revenue, purchase_day)) / nullif(count(*) - 1, 0), 0
    ) as monetary_value
from days cross join as_of
group by customer_id
"""


def run_floor(con: duckdb.DuckDBPyConnection, orders_file: Path) -> int:
    """Build ``floor_rfm`` on ``con``; returns its customers."""
    con.execute(floor_sql(Path(orders_file)))
    return int(con.execute("select count(*) from floor_rfm").fetchone()[0])


def compare_floor_to_mart(con: duckdb.DuckDBPyConnection, warehouse: Path) -> dict[str, Any]:
    """How closely the floor agrees with ``marts.customer_features`` (a sanity check that the
    floor computes the same features): customers in both, and the share with equal frequency,
    recency and tenure. The floor does not quarantine bad rows, so a few differ."""
    con.execute(f"attach {_sql_text(str(warehouse))} as wh (read_only)")
    try:
        row = con.execute(
            """
            select
                count(*) filter (where f.customer_id is not null and m.customer_id is not null),
                count(*) filter (where m.customer_id is null),
                count(*) filter (where f.customer_id is null),
                avg(case when f.frequency = m.frequency and f.recency_days = m.recency_days
                    and f.tenure_days = m.tenure_days then 1.0 else 0.0 end)
                    filter (where f.customer_id is not null and m.customer_id is not null)
            from floor_rfm as f
            full outer join (
                select customer_id, frequency, recency_days, tenure_days
                from wh.marts.customer_features where has_purchased
            ) as m using (customer_id)
            """
        ).fetchone()
    finally:
        con.execute("detach wh")
    return {
        "customers_in_both": int(row[0]),
        "only_in_floor": int(row[1]),
        "only_in_mart": int(row[2]),
        "share_equal_frt": None if row[3] is None else round(float(row[3]), 5),
    }


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


# --------------------------------------------------------------------------------------------
# Ratios, targets, the generated section of docs/benchmarks.md and the chart
# --------------------------------------------------------------------------------------------

#: The issue's targets at 10M orders (docs/benchmarks.md).
TARGET_FULL_VS_FLOOR = 10.0  # whole job <= 10 x floor + the fixed start-up cost
TARGET_DBT_VS_FLOOR = 3.0  # dbt models for features and tiers <= 3 x floor
TARGET_DAILY_VS_FULL = 0.10  # a daily +1 % run <= 10 % of the full run
BEGIN_MARKER = "<!-- make bench: generated section, rewritten by benchmarks/bench_warehouse.py -->"
END_MARKER = "<!-- make bench: end of generated section -->"


def ratios(
    result: Mapping[str, Any], startup_s: float | None, startup_cpu_s: float | None = None
) -> dict[str, float | None]:
    """The issue's ratios for one scale. ``full_minus_startup_vs_floor`` is the job's time
    beyond the fixed start-up cost, in floors (the target: at most 10); the ``cpu_`` one is the
    same in CPU time, which a loaded machine disturbs less."""
    floor = result["floor"]["wall_s"]
    full = result["full"]["wall_s"]
    daily = (result.get("daily") or {}).get("wall_s")
    out: dict[str, float | None] = {
        "full_vs_floor": full / floor,
        "full_minus_startup_vs_floor": None
        if startup_s is None
        else max(0.0, full - startup_s) / floor,
        "dbt_features_tiers_vs_floor": result["dbt_features_tiers_s"] / floor
        if result.get("dbt_features_tiers_s") is not None
        else None,
        "daily_vs_full": None if daily is None else daily / full,
        "cpu_full_minus_startup_vs_floor": None
        if startup_cpu_s is None or not result["floor"].get("cpu_s")
        else max(0.0, result["full"]["cpu_s"] - startup_cpu_s) / result["floor"]["cpu_s"],
    }
    return out


def replace_section(document: str, section: str) -> str:
    """``document`` with the text between the markers replaced by ``section`` (the markers
    and everything outside them kept); appended at the end when there are no markers yet."""
    block = f"{BEGIN_MARKER}\n{section.strip()}\n{END_MARKER}"
    if BEGIN_MARKER in document and END_MARKER in document:
        head, rest = document.split(BEGIN_MARKER, 1)
        _, tail = rest.split(END_MARKER, 1)
        return head + block + tail
    return document.rstrip("\n") + "\n\n" + block + "\n"


def load_results(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"scales": {}, "startup": {}}


def save_results(path: Path, results: Mapping[str, Any]) -> None:
    scratch = path.with_name(f".{path.name}.partial")
    scratch.write_text(json.dumps(results, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(scratch, path)


def _fmt_s(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f} s" if value < 100 else f"{value:,.0f} s"


def _fmt_ratio(value: float | None, target: float | None = None, pct: bool = False) -> str:
    if value is None:
        return "—"
    text = f"{value * 100:.1f} %" if pct else f"{value:.1f}×"
    if target is None:
        return text
    if value <= target:
        return f"{text} ✓"
    return f"{text} ✗ ({value / target:.1f}× the target)"


def _load(load: Sequence[float] | None) -> str:
    return "—" if not load else " / ".join(f"{x:.1f}" for x in load)


def sorted_scales(results: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return sorted(results.get("scales", {}).items(), key=lambda item: item[1]["orders"])


def render_section(results: Mapping[str, Any], chart: str | None = None) -> str:
    """The generated part of docs/benchmarks.md: command, machine, summary table with the
    ratios and targets, per-stage tables, the start-up cost, the chart."""
    meta = results.get("meta", {})
    startup = results.get("startup", {}).get("fixed") or {}
    startup_s = (startup.get("run") or {}).get("wall_s")
    startup_cpu_s = (startup.get("run") or {}).get("cpu_s")
    lines = [
        "## `make bench`: the whole job at several scales, against the floor",
        "",
        "Command: `make bench` (`BENCH_SCALES=…` selects scales; each scale's own command line, "
        f"date and load are in its section; last: `{meta.get('command', 'make bench')}`). Machine: "
        f"{meta.get('machine', '?')}. Load average (1 / 5 / 15 min) is taken before and after "
        "each measurement: the machine is shared, so wall times on a loaded machine are upper "
        "bounds; CPU time is the steadier figure.",
        "",
        "Targets (the issue, at 10M orders): whole job ≤ 10 × floor + the fixed start-up cost; "
        "dbt models for features and tiers ≤ 3 × floor; a daily +1 % run ≤ 10 % of the full run.",
        "",
        "| orders | measured | load before / after | full job | CPU | peak RSS | floor (CPU) | "
        "(job − start-up) / floor | same in CPU time | dbt features+tiers / floor | daily run | "
        "daily / full |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, res in sorted_scales(results):
        r = ratios(res, startup_s, startup_cpu_s)
        daily = res.get("daily") or {}
        daily_cell = (
            f"{_fmt_s(daily.get('wall_s'))} ({res.get('daily_mode_label', '')})" if daily else "—"
        )
        lines.append(
            f"| {label} ({res['orders']:,}) | {res.get('measured_at', '?')} | "
            f"{_load(res.get('load_before'))} → {_load(res.get('load_after'))} | "
            f"{_fmt_s(res['full']['wall_s'])} | {_fmt_s(res['full']['cpu_s'])} | "
            f"{res['full']['peak_rss_mb']:,.0f} MB | {_fmt_s(res['floor']['wall_s'])} "
            f"({_fmt_s(res['floor'].get('cpu_s'))}) | "
            f"{_fmt_ratio(r['full_minus_startup_vs_floor'], TARGET_FULL_VS_FLOOR)} | "
            f"{_fmt_ratio(r['cpu_full_minus_startup_vs_floor'], TARGET_FULL_VS_FLOOR)} | "
            f"{_fmt_ratio(r['dbt_features_tiers_vs_floor'], TARGET_DBT_VS_FLOOR)} | "
            f"{daily_cell} | {_fmt_ratio(r['daily_vs_full'], TARGET_DAILY_VS_FULL, pct=True)} |"
        )
    lines += [
        "",
        "Full job vs floor without subtracting the start-up cost: "
        + ", ".join(
            f"{label} {ratios(res, startup_s)['full_vs_floor']:.0f}×"
            for label, res in sorted_scales(results)
        )
        + ". The floor: one DuckDB query (`benchmarks/benchlib.py`, `floor_sql`) computing "
        "frequency, recency, tenure and monetary value per customer from the raw orders file, "
        "in its own process, same memory limit; its agreement with `marts.customer_features` "
        "is in the per-scale notes.",
        "",
    ]
    if startup:
        lines += _startup_lines(results)
    for label, res in sorted_scales(results):
        lines += _scale_lines(label, res)
    if chart:
        lines += [f"![time against orders, log-log]({chart})", ""]
    return "\n".join(lines)


#: Start-up measurements: the key in results.json and what was different.
STARTUP_VARIANTS = (
    ("startup", "as installed (bytecode compiled, pytensor cache warm)"),
    ("startup_no-bytecode", "before: no compiled bytecode (as before this change)"),
    ("startup_cold-pytensor", "empty pytensor compile cache (a first run)"),
)


def _startup_lines(results: Mapping[str, Any]) -> list[str]:
    lines = [
        "### Fixed start-up cost",
        "",
        "The same job on a small shop: what a run costs before the data matters. "
        "`fixed` (the figure subtracted above) is the smallest demo shop where the purchase "
        "models are fitted (300 customers, about 3,000 orders), so it includes importing "
        "pymc-marketing and compiling the models as every large run does; `few hundred orders` "
        "is 50 customers, too few for a fit (the fallback needs no compile).",
        "",
        "| case | variant | orders | measured | load before / after | wall | CPU | peak RSS | "
        "before the first step | dbt_models wall / CPU | customer_predictions + backtest "
        "wall / CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, variant in STARTUP_VARIANTS:
        for name, entry in (results.get(key) or {}).items():
            run = entry["run"]
            stages = {stage["stage"]: stage for stage in run["stages"]}
            dbt = stages.get("dbt_models") or {}
            fits = [
                stages.get(n) or {} for n in ("customer_predictions", "marts__prediction_backtest")
            ]
            lines.append(
                f"| {entry.get('label', name)} | {variant} | {entry['orders']:,} | "
                f"{entry.get('measured_at', '?')} | {_load(entry.get('load_before'))} → "
                f"{_load(entry.get('load_after'))} | {_fmt_s(run['wall_s'])} | "
                f"{_fmt_s(run['cpu_s'])} | {run['peak_rss_mb']:,.0f} MB | "
                f"{_fmt_s(run.get('before_first_step_s'))} | "
                f"{_fmt_s(dbt.get('wall_s'))} / {_fmt_s(dbt.get('cpu_s'))} | "
                f"{_fmt_s(sum(f.get('wall_s', 0) for f in fits))} / "
                f"{_fmt_s(sum(f.get('cpu_s', 0) for f in fits))} |"
            )
    lines.append("")
    return lines


def _scale_lines(label: str, res: Mapping[str, Any]) -> list[str]:
    full = res["full"]
    daily = res.get("daily") or {}
    daily_stages = {stage["stage"]: stage for stage in daily.get("stages", [])}
    lines = [
        f"### {label} orders ({res['orders']:,} order rows, {res['customers']:,} customers)",
        "",
        f"`{res.get('command', 'make bench')}`, measured {res.get('measured_at', '?')}, load "
        f"{_load(res.get('load_before'))} → "
        f"{_load(res.get('load_after'))}; DuckDB memory limit "
        f"{res.get('memory_limit') or 'default'}; demo data generated in "
        f"{_fmt_s(res.get('generate_s'))} (not counted). Floor: "
        f"{_fmt_s(res['floor']['wall_s'])} wall, {_fmt_s(res['floor']['cpu_s'])} CPU, "
        f"{res['floor']['peak_rss_mb']:,.0f} MB peak, {res['floor']['customers']:,} customers"
        + (
            f"; agrees with the mart on frequency, recency and tenure for "
            f"{res['floor_check']['share_equal_frt'] * 100:.2f} % of "
            f"{res['floor_check']['customers_in_both']:,} customers"
            if (res.get("floor_check") or {}).get("share_equal_frt") is not None
            else ""
        )
        + ".",
        "",
        "| stage | wall | CPU | peak RSS | orders/s | daily run wall |",
        "|---|---|---|---|---|---|",
    ]
    for stage in full["stages"]:
        other = daily_stages.get(stage["stage"]) or {}
        lines.append(
            f"| {stage['stage']} | {_fmt_s(stage['wall_s'])} | {_fmt_s(stage['cpu_s'])} | "
            f"{stage['peak_rss_mb']:,.0f} MB | {stage['rows_per_s']:,.0f} | "
            f"{_fmt_s(other.get('wall_s'))} |"
        )
    lines.append(
        f"| *before the first step (start, definitions, run planning)* | "
        f"{_fmt_s(full.get('before_first_step_s'))} | | | | "
        f"{_fmt_s(daily.get('before_first_step_s'))} |"
    )
    lines.append(
        f"| **whole job** | **{_fmt_s(full['wall_s'])}** | {_fmt_s(full['cpu_s'])} | "
        f"{full['peak_rss_mb']:,.0f} MB | {res['orders'] / full['wall_s']:,.0f} | "
        f"{_fmt_s(daily.get('wall_s'))} |"
    )
    lines.append("")
    if res.get("dbt_slowest"):
        slow = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in res["dbt_slowest"])
        lines.append(
            f"dbt (run_results.json): features+tiers models {_fmt_s(res['dbt_features_tiers_s'])}"
            f" summed over {res.get('dbt_features_tiers_models', '?')} models (2 threads); "
            f"slowest nodes: {slow}."
        )
        lines.append("")
    if res.get("daily_note"):
        lines += [res["daily_note"], ""]
    return lines


def plot_scaling(results: Mapping[str, Any], path: Path) -> Path:
    """Log-log chart of wall time against orders: full job, daily run, dbt step, features and
    tiers models, floor; the fixed start-up cost as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = sorted_scales(results)
    orders = [res["orders"] for _, res in scales]

    def series(get: Callable[[Mapping[str, Any]], float | None]) -> tuple[list, list]:
        pairs = [(res["orders"], get(res)) for _, res in scales]
        pairs = [(x, y) for x, y in pairs if y]
        return [x for x, _ in pairs], [y for _, y in pairs]

    def stage(res: Mapping[str, Any], name: str) -> float | None:
        return next((s["wall_s"] for s in res["full"]["stages"] if s["stage"] == name), None)

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for label, get, style in (
        ("full job", lambda r: r["full"]["wall_s"], "o-"),
        ("full job, CPU time", lambda r: r["full"]["cpu_s"], "o:"),
        ("daily +1 % run", lambda r: (r.get("daily") or {}).get("wall_s"), "s--"),
        ("dbt_models step", lambda r: stage(r, "dbt_models"), "^-"),
        ("dbt features+tiers models (sum)", lambda r: r.get("dbt_features_tiers_s"), "v:"),
        ("floor (one DuckDB query)", lambda r: r["floor"]["wall_s"], "D-"),
    ):
        xs, ys = series(get)
        if xs:
            ax.plot(xs, ys, style, label=label)
    fixed = ((results.get("startup") or {}).get("fixed") or {}).get("run")
    if fixed and orders:
        ax.axhline(fixed["wall_s"], color="grey", linestyle="--", linewidth=1)
        ax.annotate(
            f"fixed start-up {fixed['wall_s']:.0f} s",
            (min(orders), fixed["wall_s"]),
            textcoords="offset points",
            xytext=(0, 4),
            fontsize=8,
            color="grey",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("orders")
    ax.set_ylabel("seconds (wall time unless marked CPU)")
    ax.set_title("customer warehouse: time against size (make bench)")
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def copy_tree_fresh(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source`` (replaced when it exists)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
