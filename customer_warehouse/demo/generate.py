"""The entry point :func:`generate`: checks the arguments, runs the stages in a fixed order
(each with its own random stream) and writes ``truth/params.json``."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from customer_warehouse.demo.dirty import plan_dirty_customers, plan_dirty_orders, with_inserted
from customer_warehouse.demo.draws import acquisition_day_weights
from customer_warehouse.demo.engagement import (
    adjustments_table,
    redemptions_table,
    survey_responses,
)
from customer_warehouse.demo.params import (
    CUSTOMER_COLUMNS,
    DEFAULT_CHUNK_ROWS,
    DEFAULT_CUSTOMERS,
    DEFAULT_END,
    DEFAULT_SEED,
    DEFAULT_START,
    FORMATS,
    ITEM_COLUMNS,
    MAX_CUSTOMERS,
    ORDER_COLUMNS,
    PRODUCTS_PER_CATEGORY,
    BgNbdParams,
    GammaGammaParams,
    Shares,
)
from customer_warehouse.demo.simulation import (
    Window,
    World,
    assign_signups,
    build_orders,
    simulate_buyers,
    simulate_customers,
)
from customer_warehouse.demo.tables import (
    customers_table,
    items_table,
    orders_table,
    products_table,
)
from customer_warehouse.demo.vocab import CATEGORIES, CURRENCIES, RATE_X100
from customer_warehouse.demo.writing import (
    TableWriter,
    remove_previous,
    write_chunk,
    write_small_csv,
    write_surveys,
    write_truth_customers,
    write_whole,
)


class _Progress:
    """Stage lines on stderr with elapsed seconds, silenced by ``quiet``."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.started = time.perf_counter()

    def __call__(self, message: str, done: int | None = None, total: int | None = None) -> None:
        if self.quiet:
            return
        if total is not None:
            message = f"{message}: {done or 0:,}/{total:,}"
        elapsed = time.perf_counter() - self.started
        print(f"[{elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


def _parse_date(value: str | dt.date, name: str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a date; write it as YYYY-MM-DD.") from None


def _check_arguments(
    customers: int,
    seed: int,
    fmt: str,
    dirty_rate: float,
    window: Window,
    chunk_rows: int,
    gg: GammaGammaParams,
) -> None:
    """Raise ValueError with the fix for the first argument out of range."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not supported; use one of {', '.join(FORMATS)}.")
    if not 1 <= customers <= MAX_CUSTOMERS:
        raise ValueError(
            f"customers={customers} is out of range; use 1 to {MAX_CUSTOMERS:,} "
            "(customer ids have 7 digits and unknown-customer rows need free ids)."
        )
    if not 0.0 <= dirty_rate <= 0.5:
        raise ValueError(f"dirty_rate={dirty_rate} must be between 0 and 0.5 (a fraction).")
    if window.end <= window.start:
        raise ValueError(f"end {window.end} must be after start {window.start}.")
    if seed < 0:
        raise ValueError(f"seed={seed} must be zero or positive.")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows={chunk_rows} must be positive.")
    if gg.q <= 1:
        raise ValueError(f"gamma_gamma.q={gg.q} must be above 1 (the mean spend is p*v/(q-1)).")


def generate(
    out_dir: str | Path,
    customers: int = DEFAULT_CUSTOMERS,
    seed: int = DEFAULT_SEED,
    fmt: str = "csv",
    dirty_rate: float = 0.0,
    start: str | dt.date = DEFAULT_START,
    end: str | dt.date = DEFAULT_END,
    items: bool = True,
    quiet: bool = False,
    bg_nbd: BgNbdParams | None = None,
    gamma_gamma: GammaGammaParams | None = None,
    shares: Shares | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> dict[str, Any]:
    """Write the demo exports and their truth to ``out_dir``; return the row counts.

    ``chunk_rows`` only bounds memory (orders are formatted and written that many at a time);
    it does not change the output.
    """
    started = time.perf_counter()
    window = Window.of(_parse_date(start, "start"), _parse_date(end, "end"))
    bg = bg_nbd or BgNbdParams()
    gg = gamma_gamma or GammaGammaParams()
    shares = shares or Shares()
    _check_arguments(customers, seed, fmt, dirty_rate, window, chunk_rows, gg)

    run = _Run.start(Path(out_dir), fmt, seed, window, shares, _Progress(quiet))
    world = _simulate(run, customers, bg, gg)
    written = _write_customers(run, world, dirty_rate)
    item_seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
    written |= _write_orders(run, world, dirty_rate, items, item_seed, chunk_rows)
    written |= _write_engagement(run, world)
    write_truth_customers(
        run.out / "truth" / "customers.parquet", world.people, world.buyers, window.start_epoch_day
    )
    arguments = {
        "seed": seed,
        "customers": customers,
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "format": fmt,
        "dirty_rate": dirty_rate,
        "items": items,
    }
    summary_counts = _summary_counts(world, written)
    _write_params(run.out, bg, gg, shares, arguments, summary_counts)
    run.progress("done")
    return {
        "out_dir": str(run.out),
        "format": fmt,
        **summary_counts,
        "elapsed_seconds": round(time.perf_counter() - started, 3),
    }


@dataclass(frozen=True)
class _Run:
    """What every stage needs: the folder and format, the random streams (children of one
    SeedSequence: adding a stream at the end changes no earlier file), the window, the shares
    and the progress lines."""

    out: Path
    fmt: str
    streams: list[np.random.Generator]
    window: Window
    shares: Shares
    progress: _Progress

    @classmethod
    def start(
        cls, out: Path, fmt: str, seed: int, window: Window, shares: Shares, progress: _Progress
    ) -> _Run:
        """Prepare the folder (its generated files are removed) and the streams."""
        out.mkdir(parents=True, exist_ok=True)
        (out / "truth").mkdir(exist_ok=True)
        remove_previous(out)
        streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(10)]
        return cls(out, fmt, streams, window, shares, progress)

    def writer(self, name: str, columns: Sequence[str]) -> TableWriter:
        return TableWriter(self.out / f"{name}.{self.fmt}", columns, self.fmt)

    def write_whole(self, name: str, table: pa.Table) -> None:
        write_whole(self.out / f"{name}.{self.fmt}", table, self.fmt)

    def write_truth(self, name: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        write_small_csv(self.out / "truth" / name, header, rows)


def _simulate(run: _Run, customers: int, bg: BgNbdParams, gg: GammaGammaParams) -> World:
    """Customers, buyers and their orders (random streams 0-3)."""
    streams, window, shares = run.streams, run.window, run.shares
    day_weights = acquisition_day_weights(window.start, window.n_days)
    run.progress(f"simulating {customers:,} customers")
    people = simulate_customers(streams[0], customers, shares)
    buyers = simulate_buyers(streams[1], people, day_weights, bg, gg)
    orders, completed, counts = build_orders(
        streams[2], people, buyers, gg, shares, window.start_epoch_day, window.cap_utc
    )
    assign_signups(streams[3], people, orders, day_weights, window.start_epoch_day)
    orders.customer_number = people.number[orders.customer]
    n_orders = len(orders.id)
    run.progress("simulated orders", n_orders, n_orders)
    return World(people, buyers, orders, completed, dict(counts))


def _write_customers(run: _Run, world: World, dirty_rate: float) -> dict[str, Any]:
    """``customers`` with its dirty rows and their truth (streams 4-5), and ``products``."""
    people = world.people
    table = customers_table(run.streams[4], people, run.shares)
    plan = plan_dirty_customers(run.streams[5], table, people, dirty_rate)
    writer = run.writer("customers", CUSTOMER_COLUMNS)
    writer.write(with_inserted(table, np.arange(people.n), plan, 0, people.n, last=True))
    writer.close()
    del table
    run.write_whole("products", products_table())
    run.progress("customers", writer.rows, writer.rows)
    header = ("customer_id", "expected_reason", "row_number")
    run.write_truth("dirty_customers.csv", header, plan.truth)
    return {"customer_rows": writer.rows, "dirty_customer_rows": int(plan.rows.num_rows)}


def _write_orders(
    run: _Run, world: World, dirty_rate: float, items: bool, item_seed: int, chunk_rows: int
) -> dict[str, Any]:
    """``orders`` (and ``order_items``) chunk by chunk, with the dirty rows and their truth
    (stream 6).

    Formatting (numpy/Arrow) and writing (Arrow, releases the GIL) overlap on two cores: one
    thread writes chunk k while this one formats chunk k + 1; at most two chunks wait."""
    orders, n_orders = world.orders, len(world.orders.id)
    plan = plan_dirty_orders(run.streams[6], orders, dirty_rate, world.people.n)
    order_writer = run.writer("orders", ORDER_COLUMNS)
    item_writer = run.writer("order_items", ITEM_COLUMNS) if items else None
    reported = 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: deque[Future[None]] = deque()
        for lo in range(0, max(n_orders, 1), chunk_rows):
            hi = min(lo + chunk_rows, n_orders)
            rows = np.arange(lo, hi)
            table = orders_table(orders, rows)
            lines = None
            if item_writer is not None and len(rows):
                lines = items_table(orders, world.people, rows, table.column(0), item_seed)
            merged = with_inserted(table, rows, plan, lo, hi, last=hi >= n_orders)
            pending.append(pool.submit(write_chunk, order_writer, merged, item_writer, lines))
            while len(pending) > 1:
                pending.popleft().result()
            if hi - reported >= 1_000_000 or hi >= n_orders:
                run.progress("orders", hi, n_orders)
                reported = hi
        while pending:
            pending.popleft().result()
    order_writer.close()
    if item_writer is not None:
        item_writer.close()
    run.write_truth("dirty_orders.csv", ("order_id", "expected_reason", "row_number"), plan.truth)
    return {
        "order_rows": order_writer.rows,
        "dirty_order_rows": int(plan.rows.num_rows),
        "order_items": item_writer.rows if item_writer is not None else 0,
    }


def _write_engagement(run: _Run, world: World) -> dict[str, Any]:
    """``redemptions``, the survey files and ``point_adjustments`` (streams 7-9)."""
    streams, shares, window = run.streams, run.shares, run.window
    redemptions, over_ids = redemptions_table(streams[7], world, shares, window)
    run.write_whole("redemptions", redemptions)
    run.progress("redemptions", redemptions.num_rows, redemptions.num_rows)
    responses = survey_responses(streams[8], world, shares, window)
    survey_files = write_surveys(run.out, responses)
    adjustments = adjustments_table(streams[9], world, shares, window)
    run.write_whole("point_adjustments", adjustments)
    run.progress("point adjustments", adjustments.num_rows, adjustments.num_rows)
    run.progress("survey responses", len(responses), len(responses))
    over = [(rid, "over_redemption") for rid in over_ids]
    run.write_truth("over_redemptions.csv", ("redemption_id", "expected_reason"), over)
    return {
        "redemptions": redemptions.num_rows,
        "over_redemptions": len(over_ids),
        "point_adjustments": adjustments.num_rows,
        "survey_responses": len(responses),
        "survey_files": len(survey_files),
    }


def _summary_counts(world: World, written: dict[str, Any]) -> dict[str, Any]:
    """The counts of the summary and of ``truth/params.json``, in their fixed order."""
    n = world.people.n
    buyers = world.buyers
    return {
        "customers": n,
        "buyers": int(len(buyers.index)),
        "prospects": int(n - len(buyers.index)),
        **world.counts,
        "orders": int(len(world.orders.id)),
        "repeat_purchases": int(buyers.draw.repeat_purchases.sum()),
        "repeat_purchase_days": int(buyers.repeat_days.sum()),
        "dropped_out": int(buyers.draw.dropped_out.sum()),
        "order_rows": written["order_rows"],
        "dirty_order_rows": written["dirty_order_rows"],
        "customer_rows": written["customer_rows"],
        "dirty_customer_rows": written["dirty_customer_rows"],
        "order_items": written["order_items"],
        "products": len(CATEGORIES) * PRODUCTS_PER_CATEGORY,
        "redemptions": written["redemptions"],
        "over_redemptions": written["over_redemptions"],
        "point_adjustments": written["point_adjustments"],
        "survey_responses": written["survey_responses"],
        "survey_files": written["survey_files"],
    }


def _write_params(
    out: Path,
    bg: BgNbdParams,
    gg: GammaGammaParams,
    shares: Shares,
    arguments: dict[str, Any],
    counts: dict[str, Any],
) -> None:
    """``truth/params.json``: the model, the arguments and the counts (keys sorted)."""
    params = {
        "time_unit": "day",
        "bg_nbd": asdict(bg),
        "gamma_gamma": asdict(gg),
        **arguments,
        "shares": asdict(shares),
        "currency_rates_to_cny": {
            c: int(r) / 100 for c, r in zip(CURRENCIES, RATE_X100, strict=True)
        },
        "purchase_day": "UTC date; every order is between 08:00 and 23:59:59 +08:00, so it is "
        "also the China date",
        "counts": counts,
    }
    (out / "truth" / "params.json").write_text(
        json.dumps(params, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
