"""Results of ``make bench`` (``benchmarks/bench_warehouse.py``; tested in
``tests/test_bench.py``): ratios against the targets, results.json, the generated section of
docs/benchmarks.md and the scaling chart.

Deterministic given its inputs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

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
        + ". The floor: one DuckDB query (`benchmarks/benchmeasure.py`, `floor_sql`) computing "
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
