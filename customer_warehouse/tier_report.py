"""A small, self-contained HTML report of the tiers, for people without a BI tool.

It reads only marts (``tier_summary``, ``customer_tier_transitions``) and writes one HTML file
with the charts embedded as PNG, so it can be mailed or opened from disk:

- customers and revenue share per value tier, membership level, lifecycle stage and region
  (side by side, so "20 % of customers bring 65 % of revenue" is visible at a glance);
- movements per as-of date: upgrades, downgrades and stage changes;
- the value-tier transition matrix (from which tier to which).

Usage: ``python -m customer_warehouse.tier_report [--out reports/tier_report.html]``
(reads ``CW_WAREHOUSE_PATH``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import html
import io
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import duckdb
import matplotlib

matplotlib.use("Agg")  # files only: no display needed on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from customer_warehouse import warehouse
from customer_warehouse.config import PROJECT_DIR, ConfigError, load_settings  # noqa: E402

DEFAULT_OUT = PROJECT_DIR / "reports" / "tier_report.html"
#: A temporary report file this old was left by a killed writer (see write_atomically).
STALE_TEMP_AGE_S = 3600
DIMENSIONS = ("value_tier", "membership_level", "lifecycle_stage", "region")
#: Segment order for the charts (best first); segments not listed follow alphabetically.
SEGMENT_ORDER = {
    "value_tier": ["high_value", "potential", "ordinary", "low_value", "not_scored"],
    "membership_level": ["platinum", "gold", "silver", "ordinary"],
    "lifecycle_stage": ["new", "active", "at_risk", "silent", "churned", "prospect"],
}
TITLES = {
    "value_tier": "Value tier",
    "membership_level": "Membership level",
    "lifecycle_stage": "Lifecycle stage",
    "region": "Region",
}


class ReportError(RuntimeError):
    """The marts the report needs are missing; the message says how to build them."""


def _png(fig: plt.Figure) -> str:
    """The figure as a base64 PNG for an <img> tag (and the figure closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _ordered(frame: pd.DataFrame, dimension: str) -> pd.DataFrame:
    order = SEGMENT_ORDER.get(dimension, [])
    rank = {segment: i for i, segment in enumerate(order)}
    keys = frame["segment"].map(lambda s: (rank.get(s, len(order)), s))
    return frame.assign(_key=keys).sort_values("_key").drop(columns="_key")


def share_chart(summary: pd.DataFrame, dimension: str) -> str:
    """Grouped bars: share of customers and share of revenue per segment of one dimension."""
    frame = _ordered(summary[summary["dimension"] == dimension], dimension)
    positions = range(len(frame))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.4
    ax.bar(
        [p - width / 2 for p in positions],
        frame["customer_share"] * 100,
        width,
        label="customers %",
        color="#4C72B0",
    )
    ax.bar(
        [p + width / 2 for p in positions],
        frame["revenue_share"] * 100,
        width,
        label="revenue %",
        color="#DD8452",
    )
    ax.set_xticks(list(positions))
    ax.set_xticklabels(frame["segment"], rotation=20, ha="right")
    ax.set_ylabel("% of total")
    ax.set_title(f"{TITLES.get(dimension, dimension)}: customers and revenue share")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def movements_chart(transitions: pd.DataFrame) -> str | None:
    """Stacked bars of upgrades, downgrades and stage changes per as-of date of change."""
    if transitions.empty:
        return None
    counts = (
        transitions.groupby(["changed_on", "direction"])
        .size()
        .unstack(fill_value=0)
        .reindex(columns=["upgrade", "downgrade", "stage_change"], fill_value=0)
        .sort_index()
    )
    fig, ax = plt.subplots(figsize=(8, 3.2))
    counts.index = [pd.Timestamp(d).strftime("%Y-%m-%d") for d in counts.index]
    counts.plot.bar(stacked=True, ax=ax, color=["#55A868", "#C44E52", "#8172B2"], width=0.8)
    ax.set_xlabel("as-of date of the change")
    ax.set_ylabel("customers")
    ax.set_title("Movements between tiers, levels and stages")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    if len(counts) > 12:
        for i, label in enumerate(ax.get_xticklabels()):
            label.set_visible(i % max(1, len(counts) // 12) == 0)
    return _png(fig)


def transition_matrix(transitions: pd.DataFrame) -> pd.DataFrame:
    """Counts of value-tier transitions, from (rows) -> to (columns)."""
    tiers = transitions[transitions["dimension"] == "value_tier"]
    order = SEGMENT_ORDER["value_tier"][:-1]
    matrix = pd.crosstab(tiers["from_value"], tiers["to_value"])
    return matrix.reindex(index=order, columns=order, fill_value=0)


def matrix_chart(matrix: pd.DataFrame) -> str | None:
    if int(matrix.to_numpy().sum()) == 0:
        return None
    fig, ax = plt.subplots(figsize=(4.8, 4))
    ax.imshow(matrix.to_numpy(), cmap="Blues")
    ax.set_xticks(range(len(matrix.columns)))
    ax.set_xticklabels(matrix.columns, rotation=30, ha="right")
    ax.set_yticks(range(len(matrix.index)))
    ax.set_yticklabels(matrix.index)
    ax.set_xlabel("to")
    ax.set_ylabel("from")
    for (row, col), value in pd.DataFrame(matrix.to_numpy()).stack().items():
        ax.text(col, row, f"{value:,}", ha="center", va="center", fontsize=8)
    ax.set_title("Value-tier transitions")
    return _png(fig)


def _load(con: duckdb.DuckDBPyConnection) -> tuple[pd.DataFrame, pd.DataFrame]:
    tables = {
        row[0]
        for row in con.execute(
            "select table_name from information_schema.tables where table_schema = 'marts'"
        ).fetchall()
    }
    if "tier_summary" not in tables:
        raise ReportError(
            "marts.tier_summary does not exist. Build the warehouse first (`make run`)."
        )
    summary = con.execute("select * from marts.tier_summary").df()
    if "customer_tier_transitions" in tables:
        transitions = con.execute("select * from marts.customer_tier_transitions").df()
    else:
        transitions = pd.DataFrame(
            columns=["changed_on", "dimension", "direction", "from_value", "to_value"]
        )
    return summary, transitions


def build_report(con: duckdb.DuckDBPyConnection, out_path: Path) -> Path:
    """Write the HTML report from the marts behind `con`; return its path."""
    summary, transitions = _load(con)
    as_of = summary["as_of_date"].max() if not summary.empty else "n/a"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>Customer tier report</title>",
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th:first-child,td:first-child{text-align:left}</style></head><body>",
        "<h1>Customer tier report</h1>",
        f"<p>As of <b>{html.escape(str(as_of))}</b>. Source: marts.tier_summary and "
        "marts.customer_tier_transitions (docs/tiers.md explains every rule).</p>",
    ]
    for dimension in DIMENSIONS:
        frame = _ordered(summary[summary["dimension"] == dimension], dimension)
        if frame.empty:
            continue
        parts.append(f"<h2>{html.escape(TITLES[dimension])}</h2>")
        parts.append(
            f"<img alt='{dimension} shares' src='data:image/png;base64,"
            f"{share_chart(summary, dimension)}'>"
        )
        table = frame[
            [
                "segment",
                "customers",
                "customer_share",
                "revenue",
                "revenue_share",
                "average_order_value",
                "nps",
            ]
        ].copy()
        table["customer_share"] = (table["customer_share"] * 100).round(1)
        table["revenue_share"] = (table["revenue_share"] * 100).round(1)
        table = table.rename(
            columns={
                "customer_share": "customers %",
                "revenue_share": "revenue %",
                "average_order_value": "avg order value",
            }
        )
        parts.append(table.to_html(index=False, na_rep="", float_format=lambda v: f"{v:,.1f}"))
    parts.append("<h2>Movements</h2>")
    movements = movements_chart(transitions)
    if movements is None:
        parts.append(
            "<p>No transitions yet: the history has one as-of date. Run "
            "<code>make backfill BACKFILL_START=YYYY-MM-DD BACKFILL_END=YYYY-MM-DD</code> (or "
            "backfill the partitions of <code>marts/customer_tier_history</code> in the Dagster "
            "UI) to compute past dates.</p>"
        )
    else:
        parts.append(f"<img alt='movements' src='data:image/png;base64,{movements}'>")
        matrix = transition_matrix(transitions)
        matrix_png = matrix_chart(matrix)
        if matrix_png:
            parts.append(
                f"<img alt='value-tier transitions' src='data:image/png;base64,{matrix_png}'>"
            )
    parts.append("</body></html>")
    write_atomically(out_path, "\n".join(parts))
    return out_path


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to a hidden temporary file beside `path`, then rename it over `path`.

    A reader (or a browser) sees the old report or the new one, never half of one, also when
    the process is killed while writing. Temporary files that a killed writer left behind are
    removed once they are older than :data:`STALE_TEMP_AGE_S`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    now = time.time()
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if now - leftover.stat().st_mtime > STALE_TEMP_AGE_S:
                leftover.unlink()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m customer_warehouse.tier_report",
        description="Write an HTML report of the customer tiers from the marts.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="HTML file to write")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(require_raw_dir=False)
        if not settings.warehouse_path.exists():
            raise ReportError(
                f"{settings.warehouse_path} does not exist. Build the warehouse first "
                "(`make run`) or point CW_WAREHOUSE_PATH at it."
            )
        with warehouse.connect(
            settings.warehouse_path, read_only=True, config=settings.duckdb_config
        ) as con:
            path = build_report(con, args.out)
    except (ReportError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
