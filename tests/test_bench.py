"""What `make bench` relies on (``benchmarks/benchprep.py``, ``benchmeasure.py`` and
``benchreport.py``): the floor query's features on orders worked out by hand, the process-tree
sampler on real processes, the dbt timings, the daily delivery in both layouts, the deliveries
probe, the ratios, the generated section of docs/benchmarks.md and the chart. Nothing here times
anything against a target."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import duckdb
import pytest

from benchmarks import benchmeasure, benchprep, benchreport
from customer_warehouse.demo import generate
from orchestration.defs.dbt.assets import keep_run_results

# --------------------------------------------------------------------------------------------
# Scales
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "orders", "label"),
    [("100k", 100_000, "100k"), ("1m", 1_000_000, "1M"), ("10M", 10_000_000, "10M"),
     ("50m", 50_000_000, "50M"), ("2.5m", 2_500_000, "2.5M"), ("500", 500, "500")],
)  # fmt: skip
def test_scales_read_and_print(text, orders, label):
    assert benchprep.parse_scale(text) == orders
    assert benchprep.scale_label(orders) == label


@pytest.mark.parametrize("text", ["", "ten", "1g", "-5", "0"])
def test_a_bad_scale_is_refused(text):
    with pytest.raises(ValueError):
        benchprep.parse_scale(text)


def test_customers_for_a_scale_match_the_generator(tmp_path):
    summary = generate(
        tmp_path, customers=benchprep.customers_for(20_000), fmt="parquet", quiet=True, items=False
    )
    assert 0.85 < summary["order_rows"] / 20_000 < 1.15


# --------------------------------------------------------------------------------------------
# The floor
# --------------------------------------------------------------------------------------------

ORDERS = [
    # order_id, customer_id, ordered_at, amount, currency, status
    ("1", "A", "2025-01-01T09:00:00+08:00", "10.00", "CNY", "completed"),  # UTC 2025-01-01
    ("2", "A", "2025-01-01T23:30:00+00:00", "5.00", "CNY", "completed"),  # same UTC day
    ("3", "A", "2025-01-11T08:00:00+08:00", "2.00", "USD", "completed"),  # 14.40 CNY
    ("4", "A", "2025-01-21 10:00:00", "30.00", None, "completed"),  # no currency: CNY
    ("5", "A", "2025-01-25 10:00:00", "99.00", "CNY", "refunded"),  # not a purchase
    ("6", "B", "2025-01-31T02:00:00+08:00", "7.50", "CNY", ""),  # empty status: completed
    ("7", "B", "2101-01-01 00:00:00", "1.00", "CNY", "completed"),  # implausible: ignored
    ("8", "C", "not a date", "3.00", "CNY", "completed"),  # unreadable: ignored
]


def _orders_file(tmp_path: Path, suffix: str) -> Path:
    path = tmp_path / f"orders.{suffix}"
    with duckdb.connect() as con:
        con.execute(
            "create table o (order_id varchar, customer_id varchar, ordered_at varchar, "
            "amount varchar, currency varchar, status varchar)"
        )
        con.executemany("insert into o values (?, ?, ?, ?, ?, ?)", ORDERS)
        fmt = "parquet" if suffix == "parquet" else "csv, header true"
        con.execute(f"copy o to '{path}' (format {fmt})")
    return path


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_the_floor_computes_frequency_recency_tenure_and_monetary_value(tmp_path, suffix):
    with duckdb.connect() as con:
        assert benchmeasure.run_floor(con, _orders_file(tmp_path, suffix)) == 2
        rows = con.execute(
            "select customer_id, frequency, recency_days, tenure_days, revenue, "
            "round(monetary_value, 4) from floor_rfm order by 1"
        ).fetchall()
    # A: purchase days 01-01 (15.00), 01-11 (14.40), 01-21 (30.00); as of 01-30 (B's day, UTC).
    # Repeat days 01-11 and 01-21: monetary value (14.40 + 30.00) / 2 = 22.20.
    assert [tuple(float(v) if not isinstance(v, str) else v for v in row) for row in rows] == [
        ("A", 2, 20, 29, 59.40, 22.20),
        ("B", 0, 0, 0, 7.50, 0.0),
    ]


def test_the_floor_agrees_with_a_mart_and_says_where_not(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema marts")
        con.execute(
            "create table marts.customer_features as select * from (values "
            "('A', true, 2, 20, 29), ('B', true, 0, 0, 1), ('Z', true, 1, 1, 1), "
            "('P', false, null, null, null)) "
            "as t(customer_id, has_purchased, frequency, recency_days, tenure_days)"
        )
    with duckdb.connect() as con:
        benchmeasure.run_floor(con, _orders_file(tmp_path, "parquet"))
        check = benchmeasure.compare_floor_to_mart(con, warehouse)
    assert check == {
        "customers_in_both": 2,
        "only_in_floor": 0,
        "only_in_mart": 1,
        "share_equal_frt": 0.5,  # B's tenure differs
    }


# --------------------------------------------------------------------------------------------
# Process-tree sampling
# --------------------------------------------------------------------------------------------

BURNER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import time; b = bytearray(120 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); "
    "print('ready', flush=True); time.sleep(30)"], stdout=subprocess.PIPE)
child.stdout.readline()
print('child ready', flush=True)
end = time.process_time() + 0.6
while time.process_time() < end:
    pass
print('burnt', flush=True)
sys.stdin.read()
child.kill()
"""


def test_the_sampler_counts_cpu_and_memory_of_the_whole_process_tree():
    proc = subprocess.Popen(
        [sys.executable, "-c", BURNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "child ready"
        before = benchmeasure.tree_usage(proc.pid)
        with benchmeasure.TreeSampler(proc.pid, interval=0.05) as sampler:
            assert proc.stdout.readline().strip() == "burnt"
            time.sleep(0.2)
        after = benchmeasure.tree_usage(proc.pid)
    finally:
        proc.communicate("", timeout=60)
    assert after[0] - before[0] >= 0.5  # the parent's busy loop
    assert after[1] >= 120 * 1024**2  # the grandchild's 120 MB are in the tree
    assert len(sampler.samples) >= 3
    cpu, peak = benchmeasure.window_usage(
        sampler.samples, sampler.samples[0].at, sampler.samples[-1].at
    )
    assert cpu <= after[0] - before[0] + 0.05 and peak >= 120 * 1024**2
    assert benchmeasure.tree_usage(proc.pid) is None  # gone


def test_window_usage_interpolates_cpu_and_takes_the_peak_inside():
    samples = [benchmeasure.Sample(t, cpu, rss) for t, cpu, rss in
               [(0.0, 0.0, 10), (1.0, 1.0, 50), (2.0, 1.5, 30), (3.0, 3.5, 20)]]  # fmt: skip
    assert benchmeasure.window_usage(samples, 0.5, 2.5) == (2.5 - 0.5, 50)
    cpu, peak = benchmeasure.window_usage(samples, 2.9, 2.95)  # shorter than the interval
    assert cpu == pytest.approx(0.1) and peak == 20
    assert benchmeasure.window_usage(samples, 5.0, 6.0) == (0.0, 20)


# --------------------------------------------------------------------------------------------
# dbt timings
# --------------------------------------------------------------------------------------------

MANIFEST = {
    "nodes": {
        "model.customer_warehouse.customer_features": {
            "depends_on": {"nodes": ["model.customer_warehouse.int_a", "seed.cw.s"]}
        },
        "model.customer_warehouse.customer_tiers": {
            "depends_on": {"nodes": ["model.customer_warehouse.customer_features"]}
        },
        "model.customer_warehouse.int_a": {"depends_on": {"nodes": ["source.cw.raw.orders"]}},
        "model.customer_warehouse.other_mart": {
            "depends_on": {"nodes": ["model.customer_warehouse.int_a"]}
        },
        "seed.cw.s": {"depends_on": {"nodes": []}},
    }
}
RUN_RESULTS = {
    "results": [
        {"unique_id": "model.customer_warehouse.customer_features", "execution_time": 2.0},
        {"unique_id": "model.customer_warehouse.customer_tiers", "execution_time": 1.5},
        {"unique_id": "model.customer_warehouse.int_a", "execution_time": 4.0},
        {"unique_id": "model.customer_warehouse.other_mart", "execution_time": 9.0},
        {"unique_id": "seed.cw.s", "execution_time": 0.5},
        {"unique_id": "test.cw.unique_x", "execution_time": 0.25},
    ]
}


def test_features_and_tiers_cost_is_their_models_and_everything_upstream():
    assert benchmeasure.upstream_models(MANIFEST, benchmeasure.FEATURES_TIERS_MODELS) == {
        "model.customer_warehouse.customer_features",
        "model.customer_warehouse.customer_tiers",
        "model.customer_warehouse.int_a",
    }
    assert benchmeasure.features_tiers_seconds(RUN_RESULTS, MANIFEST) == (7.5, 3)
    assert benchmeasure.slowest_nodes(RUN_RESULTS, 2) == [("other_mart", 9.0), ("int_a", 4.0)]


def test_the_dbt_step_keeps_the_last_run_results_in_the_target_folder(tmp_path):
    invocation = tmp_path / "target" / "dbt_models-1a2b3c4-5d6e7f8"
    invocation.mkdir(parents=True)
    (invocation / "run_results.json").write_text(json.dumps(RUN_RESULTS))
    kept = keep_run_results(invocation, tmp_path / "target")
    assert kept == tmp_path / "target" / "run_results.json"
    assert json.loads(kept.read_text()) == RUN_RESULTS
    assert not (invocation / "run_results.json").exists()
    assert keep_run_results(invocation, tmp_path / "target") is None  # none the second time


# --------------------------------------------------------------------------------------------
# The daily delivery
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("bench_demo") / "raw"
    # Dirty rows include orders dated decades ahead: the next day must follow the real ones.
    generate(raw, customers=300, fmt="parquet", quiet=True, items=False, dirty_rate=0.02)
    return raw


def _rows(path_sql: str) -> list[tuple]:
    with duckdb.connect() as con:
        return con.execute(
            f"select order_id, customer_id, ordered_at, status, status_changed_at from {path_sql}"
        ).fetchall()


def _copy(raw: Path, target: Path) -> Path:
    shutil.copytree(raw, target)
    return target


def test_daily_orders_rewrite_the_single_export_when_deliveries_are_not_available(
    demo_raw, tmp_path
):
    raw = _copy(demo_raw, tmp_path / "raw")
    rows_before = _rows(f"read_parquet('{raw / 'orders.parquet'}')")
    delivery = benchprep.add_daily_orders(raw, deliveries=False)
    rows_after = _rows(f"read_parquet('{raw / 'orders.parquet'}')")
    assert delivery.mode == "full_rerun" and delivery.path == raw / "orders.parquet"
    assert delivery.new_orders == round(len(rows_before) * 0.01)
    # Every row is kept (dirty duplicates and rows without an id too), the new ones added.
    assert len(rows_after) == len(rows_before) + delivery.new_orders
    assert len(rows_after) == delivery.total_orders_after
    before = {row[0]: row for row in rows_before}
    after = {row[0]: row for row in rows_after}
    new = {k: v for k, v in after.items() if k not in before}
    assert len(new) == delivery.new_orders and all(k.startswith("D") for k in new)
    day = delivery.delivery_date
    plausible = [r[2][:10] for r in before.values() if r[2] and "2000" < r[2][:10] <= "2026"]
    assert day.isoformat() > max(plausible) and day <= date.today()
    new_days = {date.fromisoformat(row[2][:10]) for row in new.values()}
    assert max(new_days) == day and min(new_days) >= date.fromordinal(day.toordinal() - 7)
    assert delivery.late_orders == sum(1 for r in new.values() if r[2][:10] != day.isoformat())
    assert 0 < delivery.late_orders < delivery.new_orders
    changed = [k for k in before if after[k][3] != before[k][3]]
    assert len(changed) == delivery.status_changes >= 1
    assert all(after[k][3] == "refunded" and after[k][4].startswith(day.isoformat())
               for k in changed)  # fmt: skip


def test_daily_orders_arrive_as_a_new_delivery_file_when_the_loader_reads_deliveries(
    demo_raw, tmp_path
):
    raw = _copy(demo_raw, tmp_path / "raw")
    history = benchprep.to_deliveries_layout(raw)
    assert not (raw / "orders.parquet").exists() and history.parent == raw / "orders"
    delivery = benchprep.add_daily_orders(raw, deliveries=True)
    assert delivery.mode == "delivery"
    assert delivery.path == raw / "orders" / f"{delivery.delivery_date.isoformat()}.parquet"
    delivered = _rows(f"read_parquet('{delivery.path}')")
    assert len(delivered) == delivery.new_orders + delivery.status_changes
    resent = [row for row in delivered if not row[0].startswith("D")]
    assert len(resent) == delivery.status_changes
    assert all(row[3] == "refunded" and row[4] for row in resent)
    assert benchprep.orders_files(raw) == [history, delivery.path]  # the history is untouched


def test_the_deliveries_probe_asks_the_loader():
    def reads_it(con, folder):
        con.execute("create schema raw")
        con.execute(f"create table raw.orders as select * from read_csv('{folder}/orders/*.csv')")

    def refuses(con, folder):
        raise RuntimeError(f"{folder} has no orders.csv or orders.parquet\nmore")

    assert benchprep.loader_supports_deliveries(reads_it) == (
        True, "the loader reads orders/<date>.csv deliveries"
    )  # fmt: skip
    supported, reason = benchprep.loader_supports_deliveries(refuses)
    assert reason == "RuntimeError: <probe folder> has no orders.csv or orders.parquet"
    assert not supported
    # Today's loader, asked for real, answers with its own words either way.
    supported, reason = benchprep.loader_supports_deliveries()
    assert reason and (supported or "orders" in reason)


# --------------------------------------------------------------------------------------------
# Ratios, the generated section and the chart
# --------------------------------------------------------------------------------------------


def _result(orders: int, full: float, floor: float, daily: float) -> dict:
    stage = {"stage": "dbt_models", "wall_s": full / 2, "cpu_s": full / 3, "peak_rss_mb": 900.0,
             "rows_per_s": orders / (full / 2)}  # fmt: skip
    run = {"wall_s": full, "cpu_s": full * 0.8, "peak_rss_mb": 1200.0, "stages": [stage],
           "before_first_step_s": 20.0}  # fmt: skip
    return {
        "orders": orders, "customers": orders // 10, "measured_at": "2026-11-29 08:00 UTC",
        "load_before": [1.0, 2.0, 3.0], "load_after": [4.0, 5.0, 6.0], "memory_limit": "8GB",
        "full": run, "daily": {**run, "wall_s": daily}, "daily_mode_label": "full rerun",
        "floor": {"wall_s": floor, "cpu_s": floor, "peak_rss_mb": 300.0, "customers": 10},
        "floor_check": {"share_equal_frt": 0.999, "customers_in_both": 10},
        "dbt_features_tiers_s": full / 4, "dbt_features_tiers_models": 12,
        "dbt_slowest": [["int_a", 3.0]],
    }  # fmt: skip


def test_ratios_subtract_the_fixed_start_up_cost():
    result = _result(10_000_000, full=600.0, floor=10.0, daily=90.0)
    assert benchreport.ratios(result, startup_s=100.0, startup_cpu_s=80.0) == {
        "full_vs_floor": 60.0,
        "full_minus_startup_vs_floor": 50.0,
        "dbt_features_tiers_vs_floor": 15.0,
        "daily_vs_full": 0.15,
        "cpu_full_minus_startup_vs_floor": 40.0,  # (480 - 80) / 10
    }
    assert benchreport.ratios(result, None)["full_minus_startup_vs_floor"] is None
    assert benchreport.ratios(result, None)["cpu_full_minus_startup_vs_floor"] is None


def test_the_generated_section_replaces_only_itself(tmp_path):
    results = {
        "meta": {"command": "make bench BENCH_SCALES='100k'", "machine": "2 cores"},
        "scales": {"100k": _result(100_000, 50.0, 1.0, 4.0),
                   "10M": _result(10_000_000, 600.0, 100.0, 30.0)},
        "startup": {"fixed": {"label": "fixed", "orders": 3000,
                              "run": _result(3000, 40, 1, 1)["full"]}},
    }  # fmt: skip
    section = benchreport.render_section(results, chart="img/bench_scaling.png")
    # 100k: (50 - 40) / 1 = 10.0 meets the target; 10M: (600 - 40) / 100 = 5.6. In CPU time
    # (80 % of wall here): (40 - 32) / 1 = 8.0 and (480 - 32) / 100 = 4.5.
    assert "| 100k (100,000) |" in section and "10.0× ✓" in section
    assert "5.6× ✓" in section and "8.0× ✓" in section and "4.5× ✓" in section
    assert "12.5× ✗ (4.2× the target)" in section  # dbt 12.5 / floor 1 vs 3
    assert "8.0 % ✓" in section and "5.0 % ✓" in section
    assert section.index("| 100k") < section.index("| 10M")  # by size
    document = "# Benchmarks\n\nHand-written history.\n"
    once = benchreport.replace_section(document, section)
    assert once.startswith(document.rstrip("\n")) and benchreport.BEGIN_MARKER in once
    again = benchreport.replace_section(once + "\n## Later hand-written notes\n", "new text")
    assert "Hand-written history." in again and "## Later hand-written notes" in again
    assert "new text" in again and "| 100k" not in again
    assert benchreport.replace_section(again, "new text") == again  # idempotent

    chart = benchreport.plot_scaling(results, tmp_path / "img" / "chart.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000


def test_results_are_kept_between_runs(tmp_path):
    path = tmp_path / "results.json"
    assert benchreport.load_results(path) == {"scales": {}, "startup": {}}
    benchreport.save_results(path, {"scales": {"1M": {"orders": 1}}, "startup": {}})
    assert benchreport.load_results(path)["scales"]["1M"] == {"orders": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
