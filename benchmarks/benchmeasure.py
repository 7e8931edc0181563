"""Measuring runs for ``make bench`` (``benchmarks/bench_warehouse.py``; tested in
``tests/test_bench.py``): process-tree sampling (CPU time and resident memory, read from /proc),
per-model dbt timings from run_results.json, and the floor query (one hand-written DuckDB query
over the raw orders file) with its agreement with the mart.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from benchmarks.benchprep import PROJECT_DIR, _sql_text

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
