"""`make bench`: the whole warehouse at several scales, measured against the floor.

For every scale (orders: 100k, 1M, 10M by default; 50M with BENCH_LARGE=1):

1. demo data of about that many orders (Parquet, 0.1 % dirty rows), not timed;
2. the Dagster job ``full_refresh`` exactly as ``make run`` runs it (``dagster job execute``, its
   own DAGSTER_HOME, warehouse, dbt target; the manifest parsed once beforehand, as an
   installation has it): wall time, CPU time and peak memory of the process tree, sampled every
   0.5 s; per stage (Dagster step) the step's times from the run's event log, its CPU and peak
   memory from the samples, orders per second; dbt's per-model times from run_results.json;
3. the floor: one hand-written DuckDB query computing frequency, recency, tenure and monetary
   value per customer from the same raw orders file (``benchmeasure.floor_sql``), in a process of
   its own with the same memory limit;
4. a daily run with about 1 % new orders (a tenth of them late) and 0.1 % status changes: a new
   delivery file ``orders/<date>.parquet`` when the raw loader reads deliveries, otherwise the
   single export rewritten and the whole job run again ("full rerun, deliveries not available").

Plus the fixed start-up cost: the same job on small shops (50 customers, about 500 orders; and
300 customers, the smallest demo shop whose purchase models are fitted). The results are kept
in ``benchmarks/results.json`` (a scale measured again replaces its entry) and rendered into the
generated section of docs/benchmarks.md with a chart, docs/img/bench_scaling.png.

    .venv/bin/python benchmarks/bench_warehouse.py --scales 100k 1m [--work /tmp/cw-bench]
        [--memory-limit 8GB] [--skip-startup] [--startup-only] [--no-docs]

A script, not a test: timings depend on the machine and its load (stated beside every figure).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import benchmeasure, benchprep, benchreport  # noqa: E402
from customer_warehouse.demo import generate  # noqa: E402

PROJECT_DIR = benchprep.PROJECT_DIR
RESULTS = PROJECT_DIR / "benchmarks" / "results.json"
DOC = PROJECT_DIR / "docs" / "benchmarks.md"
CHART = PROJECT_DIR / "docs" / "img" / "bench_scaling.png"
BENCH_PII_KEY = "bench-key-not-secret-0123456789abcdef0123456789"
STARTUP_SHOPS = {
    "few_hundred": ("few hundred orders (50 customers, no fit)", 50),
    "fixed": ("fixed: smallest shop with a model fit (300 customers)", 300),
}


def _load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _machine() -> str:
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    cpu = "?"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GB memory, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _job_env(work: Path, raw: Path, memory_limit: str | None, extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CW_", "DBT_"))}
    env.update(
        CW_RAW_DIR=str(raw),
        CW_WAREHOUSE_PATH=str(work / "warehouse.duckdb"),
        CW_PII_KEY=BENCH_PII_KEY,
        CW_EXPORT_DIR=str(work / "exports"),
        DAGSTER_HOME=str(work / "dagster_home"),
        DBT_TARGET_PATH=str(work / "target"),
        DBT_LOG_PATH=str(work / "logs"),
        DBT_PROFILES_DIR=str(PROJECT_DIR),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    if memory_limit:
        env["CW_DUCKDB_MEMORY_LIMIT"] = memory_limit
        env["CW_DUCKDB_TEMP_DIR"] = str(work / "duckdb_tmp")
    env.update(extra)
    return env


def _prepare_work(work: Path) -> None:
    home = work / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_DIR / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    (work / "run_config.yaml").write_text(
        "ops:\n  reports__tier_report:\n    config:\n"
        f"      out_path: {json.dumps(str(work / 'tier_report.html'))}\n"
    )


def _parse_manifest(env: dict[str, str]) -> None:
    """Load the definitions once (dbt parse into the target), not timed: an installation
    has a current manifest when the nightly run starts."""
    subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-m",
         "orchestration.definitions"],
        cwd=PROJECT_DIR, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip


def run_job(work: Path, env: dict[str, str], orders: int, log_name: str) -> dict[str, Any]:
    """One ``dagster job execute`` of full_refresh, sampled; the run's step stats after."""
    import dagster as dg

    log_path = work / log_name
    command = [
        str(Path(sys.executable).parent / "dagster"), "job", "execute", "-m",
        "orchestration.definitions", "-j", "full_refresh", "-c", str(work / "run_config.yaml"),
    ]  # fmt: skip
    started = time.time()
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, stdout=log, stderr=log)
        with benchmeasure.TreeSampler(proc.pid, interval=0.5) as sampler:
            _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    ended = time.time()
    samples = sampler.samples
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    try:
        run = instance.get_runs(limit=1)[0]
        step_stats = sorted(
            instance.get_run_step_stats(run.run_id), key=lambda s: s.start_time or 0
        )
        run_stats = instance.get_run_stats(run.run_id)
    finally:
        instance.dispose()
    stages = []
    for stat in step_stats:
        if stat.start_time is None or stat.end_time is None:
            continue
        cpu, peak = benchmeasure.window_usage(samples, stat.start_time, stat.end_time)
        wall = stat.end_time - stat.start_time
        stages.append(
            {
                "stage": stat.step_key,
                "status": str(stat.status.value if stat.status else ""),
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "peak_rss_mb": round(peak / 1024**2, 1),
                "rows_per_s": round(orders / wall) if wall > 0 else 0,
            }
        )
    first_step = min((s.start_time for s in step_stats if s.start_time), default=ended)
    cpu_total = usage.ru_utime + usage.ru_stime
    return {
        "ok": proc.returncode == 0,
        "run_id": run.run_id,
        "status": str(run.status.value),
        "wall_s": round(ended - started, 2),
        "cpu_s": round(cpu_total, 2),
        # wait4's maxrss is the largest single process of the tree; the sampled sum is the tree.
        "peak_rss_mb": round(
            max(usage.ru_maxrss / 1024, *(s.rss_bytes / 1024**2 for s in samples), 0), 1
        ),
        "largest_process_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "before_first_step_s": round(first_step - started, 2),
        "run_start_to_end_s": round(
            (run_stats.end_time or ended) - (run_stats.start_time or started), 2
        ),
        "stages": stages,
        "log": str(log_path),
    }


def run_floor(work: Path, orders_file: Path, memory_limit: str | None) -> dict[str, Any]:
    """The floor query in its own process (so its CPU and memory are its own)."""
    db = work / "floor.duckdb"
    db.unlink(missing_ok=True)
    config: dict[str, Any] = {}
    if memory_limit:
        config["memory_limit"] = memory_limit
        config["temp_directory"] = str(work / "duckdb_tmp")
    script = (
        "import json, sys, time, duckdb\n"
        "from benchmarks import benchmeasure\n"
        "con = duckdb.connect(sys.argv[1], config=json.loads(sys.argv[3]))\n"
        # No progress bar: it would print to stdout, where the result is read from.
        "con.execute('set enable_progress_bar = false')\n"
        "started, cpu = time.perf_counter(), time.process_time()\n"
        "n = benchmeasure.run_floor(con, __import__('pathlib').Path(sys.argv[2]))\n"
        "print(json.dumps({'customers': n, 'query_s': time.perf_counter() - started,\n"
        "                  'query_cpu_s': time.process_time() - cpu}))\n"
    )
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(db), str(orders_file), json.dumps(config)],
        cwd=PROJECT_DIR, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - started
    out = json.loads(proc.stdout.read().strip().splitlines()[-1])
    proc.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("the floor query failed")
    return {
        # The query's own time: the process start (importing duckdb) is not the floor's work.
        "wall_s": round(out["query_s"], 2),
        "process_wall_s": round(wall, 2),
        # CPU of the query (all DuckDB threads); the whole process's is beside it.
        "cpu_s": round(out["query_cpu_s"], 2),
        "process_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "customers": out["customers"],
        "db": str(db),
    }


def _dbt_timings(work: Path) -> dict[str, Any]:
    target = work / "target"
    try:
        run_results = json.loads((target / "run_results.json").read_text())
        manifest = json.loads((target / "manifest.json").read_text())
    except OSError:
        return {}
    seconds, models = benchmeasure.features_tiers_seconds(run_results, manifest)
    return {
        "dbt_features_tiers_s": round(seconds, 2),
        "dbt_features_tiers_models": models,
        "dbt_models_sum_s": round(sum(benchmeasure.node_seconds(run_results).values()), 2),
        "dbt_slowest": benchmeasure.slowest_nodes(run_results),
    }


def generate_data(raw: Path, orders: int) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    summary = generate(
        raw, customers=benchprep.customers_for(orders), fmt="parquet", dirty_rate=0.001, quiet=True
    )
    return summary, time.perf_counter() - started


def bench_scale(label: str, orders: int, args: argparse.Namespace, deliveries: tuple[bool, str]):
    work = args.work / f"scale-{label}"
    shutil.rmtree(work, ignore_errors=True)
    raw = work / "raw"
    _prepare_work(work)
    load_before = _load_avg()
    print(f"[{label}] generating demo data for ~{orders:,} orders ...", flush=True)
    summary, generate_s = generate_data(raw, orders)
    supported, reason = deliveries
    if supported:
        benchprep.to_deliveries_layout(raw)
    env = _job_env(work, raw, args.memory_limit, {})
    _parse_manifest(env)
    orders_file = benchprep.orders_files(raw)[0]
    print(f"[{label}] {summary['order_rows']:,} order rows; full job ...", flush=True)
    full = run_job(work, env, summary["order_rows"], "full_refresh.log")
    print(
        f"[{label}] full job {'ok' if full['ok'] else 'FAILED'} in {full['wall_s']:.0f} s",
        flush=True,
    )
    dbt = _dbt_timings(work)
    print(f"[{label}] floor ...", flush=True)
    floor = run_floor(work, orders_file, args.memory_limit)
    import duckdb

    with duckdb.connect(floor["db"]) as con:
        check = benchmeasure.compare_floor_to_mart(con, work / "warehouse.duckdb")
    print(f"[{label}] floor {floor['wall_s']:.1f} s", flush=True)
    daily_part: dict[str, Any] = {}
    if not args.skip_daily:
        daily_part = bench_daily(label, work, raw, env, supported, reason)
    result = {
        "orders": summary["order_rows"],
        "customers": summary["customers"],
        "measured_at": _now(),
        "load_before": load_before,
        "load_after": _load_avg(),
        "memory_limit": args.memory_limit,
        "generate_s": round(generate_s, 1),
        "full": full,
        "floor": floor,
        "floor_check": check,
        **daily_part,
        **dbt,
    }
    if not (full["ok"] and (daily_part.get("daily") or {"ok": True})["ok"]):
        print(f"[{label}] a run FAILED: see the logs in {work}", flush=True)
    if not args.keep:
        for name in ("raw", "warehouse.duckdb", "floor.duckdb", "serving", "duckdb_tmp"):
            path = work / name
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(
                missing_ok=True
            )
    return result


def bench_daily(
    label: str, work: Path, raw: Path, env: dict[str, str], supported: bool, reason: str
) -> dict[str, Any]:
    """The next day's delivery (about 1 % new orders) and the job run on it."""
    delivery = benchprep.add_daily_orders(raw, deliveries=supported)
    daily = run_job(work, env, delivery.new_orders + delivery.status_changes, "daily.log")
    print(f"[{label}] daily run {daily['wall_s']:.0f} s ({delivery.mode})", flush=True)
    mode_label = (
        f"delivery {delivery.path.name}"
        if delivery.mode == "delivery"
        else "full rerun, deliveries not available"
    )
    return {
        "daily": daily,
        "daily_mode": delivery.mode,
        "daily_mode_label": mode_label,
        "daily_note": (
            f"Daily run: {delivery.new_orders:,} new orders ({delivery.late_orders:,} of them "
            f"dated 1-7 days back), {delivery.status_changes:,} orders turned refunded, "
            f"delivered {delivery.delivery_date} as {mode_label}"
            + ("" if supported else f" (loader probe: {reason})")
            + ". Daily orders/s in the stage table count new + changed orders."
        ),
    }


def bench_startup(name: str, args: argparse.Namespace, extra_env: dict[str, str]):
    label, customers = STARTUP_SHOPS[name]
    work = args.work / f"startup-{name}"
    shutil.rmtree(work, ignore_errors=True)
    raw = work / "raw"
    _prepare_work(work)
    load_before = _load_avg()
    summary = generate(raw, customers=customers, fmt="parquet", dirty_rate=0.001, quiet=True)
    env = _job_env(work, raw, args.memory_limit, extra_env)
    _parse_manifest(env)
    run = run_job(work, env, summary["order_rows"], "full_refresh.log")
    print(f"[startup {name}] {run['wall_s']:.0f} s wall, {run['cpu_s']:.0f} s CPU", flush=True)
    return {
        "label": label,
        "orders": summary["order_rows"],
        "customers": customers,
        "measured_at": _now(),
        "load_before": load_before,
        "load_after": _load_avg(),
        "env": {k: v for k, v in extra_env.items()},
        "run": run,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", action="extend", default=[])
    parser.add_argument("--work", type=Path, default=Path("/tmp/cw-bench"))
    parser.add_argument("--memory-limit", default="8GB", help="CW_DUCKDB_MEMORY_LIMIT ('' none)")
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument("--startup-only", action="store_true")
    parser.add_argument(
        "--startup-variant",
        choices=("after", "no-bytecode", "cold-pytensor"),
        default="after",
        help="start-up measured as installed (after), without compiled bytecode (as before "
        "`make install` compiled it), or with an empty pytensor cache",
    )
    parser.add_argument("--keep", action="store_true", help="keep raw data and warehouses")
    parser.add_argument(
        "--skip-daily", action="store_true", help="no daily run (when time is short)"
    )
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    args.memory_limit = args.memory_limit or None
    scales = [(benchprep.scale_label(o), o) for o in map(benchprep.parse_scale, args.scales)]
    args.work.mkdir(parents=True, exist_ok=True)

    results = benchreport.load_results(RESULTS)
    command = " ".join(["benchmarks/bench_warehouse.py", *(argv or sys.argv[1:])])
    render_only = args.skip_startup and args.startup_only
    results["meta"] = (
        results.get("meta", {})
        if render_only
        else {
            "command": command,
            "machine": _machine(),
            "git_revision": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=PROJECT_DIR,
                capture_output=True,
                text=True,
            ).stdout.strip(),  # fmt: skip
        }
    )
    if not args.skip_startup:
        extra: dict[str, str] = {}
        if args.startup_variant == "no-bytecode":
            extra = {
                "PYTHONPYCACHEPREFIX": str(args.work / "empty-pycache"),
                "PYTHONDONTWRITEBYTECODE": "1",
            }
            shutil.rmtree(args.work / "empty-pycache", ignore_errors=True)
        elif args.startup_variant == "cold-pytensor":
            cold = args.work / "cold-pytensor"
            shutil.rmtree(cold, ignore_errors=True)
            extra = {"PYTENSOR_FLAGS": f"base_compiledir={cold}"}
        key = "startup" if args.startup_variant == "after" else f"startup_{args.startup_variant}"
        results.setdefault(key, {})
        # The variants are compared on the shop that fits the models (the fixed cost).
        for name in STARTUP_SHOPS if args.startup_variant == "after" else ["fixed"]:
            results[key][name] = bench_startup(name, args, extra)
            benchreport.save_results(RESULTS, results)
    if not args.startup_only:
        deliveries = benchprep.loader_supports_deliveries()
        print(f"deliveries: {deliveries[0]} ({deliveries[1]})", flush=True)
        for label, orders in scales:
            results["scales"][label] = bench_scale(label, orders, args, deliveries)
            results["scales"][label]["command"] = command
            benchreport.save_results(RESULTS, results)
            _print_ratios(label, results)
    if not args.no_docs:
        benchreport.plot_scaling(results, CHART)
        section = benchreport.render_section(results, chart="img/" + CHART.name)
        DOC.write_text(benchreport.replace_section(DOC.read_text(), section))
        print(f"wrote {DOC} and {CHART}")
    return 0


def _print_ratios(label: str, results: dict[str, Any]) -> None:
    fixed = ((results.get("startup") or {}).get("fixed") or {}).get("run") or {}
    r = benchreport.ratios(results["scales"][label], fixed.get("wall_s"))
    print(
        f"[{label}] full/floor {r['full_vs_floor']:.1f}x; (full - start-up)/floor "
        f"{r['full_minus_startup_vs_floor'] or 0:.1f}x (target <= 10); dbt features+tiers/floor "
        f"{r['dbt_features_tiers_vs_floor'] or 0:.1f}x (target <= 3); daily/full "
        f"{(r['daily_vs_full'] or 0) * 100:.1f} % (target <= 10 %)",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
