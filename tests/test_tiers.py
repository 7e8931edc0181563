"""Customer features, tiers and levels on generated data, checked against independent recounts.

One small demo warehouse is built with the project's normal path (raw load, survey ingestion,
`dbt build`, which also runs every dbt unit test and data test of the tier models). Then:

- the membership levels (grace period included) equal a plain day-by-day recount in Python;
- the RFM scores equal pandas' min-rank percent ranks binned by the seed;
- value tiers and lifecycle stages follow the first matching seed row;
- editing thresholds in the seeds of a copy of the project moves customers, with no SQL edit;
- the tier report renders from the marts.
"""

from __future__ import annotations

import calendar
import csv
import filecmp
import shutil
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from customer_warehouse import demo, tier_report
from customer_warehouse.ingestion import surveys

from .conftest import PROJECT_DIR, Warehouse, build_warehouse, dbt_env, run_dbt
from .project_copy import project_copy

pytestmark = pytest.mark.slow

TIER_SEEDS = PROJECT_DIR / "seeds" / "tiers"
DEMO_CUSTOMERS = 400
DEMO_SEED = 7


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Warehouse:
    work = tmp_path_factory.mktemp("tiers")
    raw = work / "raw"
    demo.generate(raw, customers=DEMO_CUSTOMERS, seed=DEMO_SEED, dirty_rate=0.01, quiet=True)
    with duckdb.connect(str(work / "warehouse.duckdb")) as con:
        surveys.ingest_surveys(con, raw / "surveys")
    return build_warehouse(raw, work)


def _read_seed(name: str) -> list[dict[str, str]]:
    with (TIER_SEEDS / f"{name}.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _add_months(day: date, months: int) -> date:
    """Calendar months later, the day clamped to the month's end (as the SQL does)."""
    year, month_index = divmod(day.month - 1 + months, 12)
    year += day.year
    month = month_index + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _tiers(warehouse: Warehouse) -> pd.DataFrame:
    with warehouse.connect() as con:
        return con.execute("select * from marts.customer_tiers").df().set_index("customer_id")


def test_the_build_populates_every_tier_stage_and_level(warehouse: Warehouse) -> None:
    tiers = _tiers(warehouse)
    assert len(tiers) >= DEMO_CUSTOMERS * 0.9
    assert set(tiers["value_tier"].dropna()) == {"high_value", "potential", "ordinary", "low_value"}
    assert set(tiers["lifecycle_stage"]) == {
        "prospect",
        "new",
        "active",
        "at_risk",
        "silent",
        "churned",
    }
    assert {"ordinary", "silver", "gold"} <= set(tiers["membership_level"])
    # dbt unit tests of the tier rules ran inside the build
    for unit_test in [
        "membership_levels_thresholds_and_grace_period",
        "rfm_ties_get_equal_scores",
        "as_of_cut_off_drops_later_orders_and_later_status_changes",
        "same_day_orders_are_one_purchase_day",
        "lifecycle_stage_thresholds_and_prospects",
        "value_tier_rules_first_match_by_priority",
    ]:
        assert unit_test in warehouse.dbt_output


def test_membership_levels_match_a_day_by_day_recount(warehouse: Warehouse) -> None:
    """Held level = the best level qualified on any day within its grace period, day by day."""
    levels = sorted(
        (
            int(row["level_rank"]),
            row["membership_level"],
            Decimal(row["min_spend_12m"]),
            int(row["min_orders_12m"]),
            int(row["grace_period_days"]),
        )
        for row in _read_seed("membership_levels")
    )
    settings = {row["setting_name"]: row["setting_value"] for row in _read_seed("tier_settings")}
    window = int(settings["membership_window_months"])
    as_of = warehouse.scalar("select as_of_date from intermediate.int_as_of_date")
    purchases: dict[str, list[tuple[date, Decimal]]] = defaultdict(list)
    for customer_id, ordered_date, amount in warehouse.query(
        "select customer_id, ordered_date, amount "
        "from intermediate.int_orders_filtered_to_as_of_date where status = 'completed'"
    ):
        purchases[customer_id].append((ordered_date, amount))

    def balance(customer_id: str, day: date) -> tuple[Decimal, int]:
        counting = [a for d, a in purchases[customer_id] if d <= day < _add_months(d, window)]
        return sum(counting, Decimal(0)), len(counting)

    def qualified_rank(spend: Decimal, orders: int) -> int:
        return max(rank for rank, _, s, o, _ in levels if spend >= s and orders >= o)

    max_grace = max(grace for *_, grace in levels)
    tiers = _tiers(warehouse)
    mismatches = []
    for customer_id, row in tiers.iterrows():
        by_day = {
            as_of - timedelta(days=k): balance(customer_id, as_of - timedelta(days=k))
            for k in range(max_grace + 1)
        }
        held = max(
            rank
            for rank, _, min_spend, min_orders, grace in levels
            for day, (spend, orders) in by_day.items()
            if (as_of - day).days <= grace and spend >= min_spend and orders >= min_orders
        )
        spend_now, orders_now = by_day[as_of]
        expected = {
            "membership_level_rank": held,
            "qualified": qualified_rank(spend_now, orders_now),
            "spend_12m": spend_now,
            "orders_12m": orders_now,
        }
        actual = {
            "membership_level_rank": row["membership_level_rank"],
            "qualified": next(
                rank for rank, name, *_ in levels if name == row["qualified_membership_level"]
            ),
            "spend_12m": Decimal(str(row["spend_12m"])).quantize(Decimal("0.01")),
            "orders_12m": row["orders_12m"],
        }
        if held > expected["qualified"]:
            grace = next(g for rank, *_, g in levels if rank == held)
            last_day = max(
                day
                for day, (spend, orders) in by_day.items()
                if (as_of - day).days <= grace and qualified_rank(spend, orders) >= held
            )
            expected["kept_until"] = last_day + timedelta(days=grace)
            actual["kept_until"] = pd.Timestamp(row["membership_level_kept_until"]).date()
        if expected != actual:
            mismatches.append((customer_id, expected, actual))
    assert not mismatches, mismatches[:5]
    assert (tiers["is_in_grace_period"]).sum() > 0, "the demo data should exercise the grace period"


def test_rfm_scores_are_min_rank_percentiles_binned_by_the_seed(warehouse: Warehouse) -> None:
    with warehouse.connect() as con:
        features = con.execute(
            "select customer_id, days_since_last_purchase, purchase_days_count, revenue "
            "from marts.customer_features where has_purchased"
        ).df()
    bins = sorted(
        (float(row["min_percent_rank"]), int(row["score"])) for row in _read_seed("rfm_score_bins")
    )
    n = len(features)

    def score(rank_series: pd.Series) -> pd.Series:
        percent = (rank_series - 1) / (n - 1)
        return percent.map(lambda p: max(s for low, s in bins if p >= low))

    features["revenue"] = features["revenue"].astype(float)
    expected = pd.DataFrame(
        {
            "recency_score": score(
                features["days_since_last_purchase"].rank(method="min", ascending=False)
            ),
            "frequency_score": score(features["purchase_days_count"].rank(method="min")),
            "monetary_score": score(features["revenue"].rank(method="min")),
        }
    ).set_index(features["customer_id"])
    actual = _tiers(warehouse).loc[expected.index, list(expected.columns)]
    pd.testing.assert_frame_equal(actual.astype(int), expected.astype(int), check_names=False)
    # ties: customers with equal measures never get different scores
    for measure, column in [
        ("purchase_days_count", "frequency_score"),
        ("revenue", "monetary_score"),
    ]:
        per_value = features.assign(score=actual[column].to_numpy()).groupby(measure)["score"]
        assert (per_value.nunique() == 1).all()


def test_value_tiers_and_stages_are_the_first_matching_seed_row(warehouse: Warehouse) -> None:
    rules = sorted(_read_seed("value_tier_rules"), key=lambda r: int(r["priority"]))
    stages = sorted(_read_seed("lifecycle_stage_thresholds"), key=lambda r: int(r["priority"]))
    tiers = _tiers(warehouse)
    for customer_id, row in tiers.iterrows():
        if row["lifecycle_stage"] == "prospect":
            assert not row["has_purchased"] and pd.isna(row["value_tier"]), customer_id
            continue
        scores = (row["recency_score"], row["frequency_score"], row["monetary_score"])
        expected_tier = next(
            rule["value_tier"]
            for rule in rules
            if scores[0] >= int(rule["min_recency_score"])
            and scores[1] >= int(rule["min_frequency_score"])
            and scores[2] >= int(rule["min_monetary_score"])
            and sum(scores) >= int(rule["min_rfm_total"])
        )
        expected_stage = next(
            stage["lifecycle_stage"]
            for stage in stages
            if (
                not stage["max_days_since_first_purchase"]
                or row["days_since_first_purchase"] <= int(stage["max_days_since_first_purchase"])
            )
            and (
                not stage["max_days_since_last_purchase"]
                or row["days_since_last_purchase"] <= int(stage["max_days_since_last_purchase"])
            )
        )
        assert (row["value_tier"], row["lifecycle_stage"]) == (expected_tier, expected_stage), (
            customer_id
        )


def _rewrite_seed(project: Path, name: str, edit) -> None:
    path = project / "seeds" / "tiers" / f"{name}.csv"
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames
        rows = [edit(dict(row)) for row in reader]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _same_sql(left: Path, right: Path) -> bool:
    comparison = filecmp.dircmp(left, right)
    if comparison.left_only or comparison.right_only or comparison.diff_files:
        return False
    return all(_same_sql(left / sub, right / sub) for sub in comparison.common_dirs)


def test_thresholds_changed_in_the_seeds_change_the_tiers_with_no_sql_edit(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    before = _tiers(warehouse)
    project = project_copy(tmp_path)

    def stricter_high_value(row):
        if row["value_tier"] == "high_value":
            row.update(
                min_recency_score="5",
                min_frequency_score="5",
                min_monetary_score="5",
                min_rfm_total="15",
                value_tier_label="VIP",
            )
        return row

    def easy_silver(row):
        if row["membership_level"] == "silver":
            row.update(min_spend_12m="0.01", min_orders_12m="1")
        return row

    def short_active(row):
        if row["lifecycle_stage"] == "active":
            row["max_days_since_last_purchase"] = "30"
        return row

    _rewrite_seed(project, "value_tier_rules", stricter_high_value)
    _rewrite_seed(project, "membership_levels", easy_silver)
    _rewrite_seed(project, "lifecycle_stage_thresholds", short_active)
    assert _same_sql(PROJECT_DIR / "models", project / "models")
    assert _same_sql(PROJECT_DIR / "macros", project / "macros")

    path = tmp_path / "warehouse.duckdb"
    shutil.copy2(warehouse.path, path)
    env = dbt_env(path, tmp_path, warehouse.raw_dir, DBT_PROFILES_DIR=str(project))
    for args in (["seed", "--select", "path:seeds/tiers"], ["run", "--select", "int_as_of_date+"]):
        run_dbt([*args, "--project-dir", str(project)], env, project=project)
    with duckdb.connect(str(path), read_only=True) as con:
        after = con.execute("select * from marts.customer_tiers").df().set_index("customer_id")

    high_before = before[before["value_tier"] == "high_value"]
    high_after = after[after["value_tier"] == "high_value"]
    assert 0 < len(high_after) < len(high_before)
    assert set(high_after["rfm_cell"]) == {"555"}
    assert set(high_after["value_tier_label"]) == {"VIP"}

    newly_silver = (before["membership_level"] == "ordinary") & (
        after["membership_level"] == "silver"
    )
    assert newly_silver.sum() > 0
    assert (after.loc[after["orders_12m"] >= 1, "membership_level_rank"] >= 2).all()

    moved = before[
        (before["lifecycle_stage"] == "active") & (before["days_since_last_purchase"] > 30)
    ]
    assert len(moved) > 0
    assert (after.loc[moved.index, "lifecycle_stage"] == "at_risk").all()


def test_tier_report_renders_charts_from_the_marts(warehouse: Warehouse, tmp_path: Path) -> None:
    out = tmp_path / "report" / "tier_report.html"
    with warehouse.connect() as con:
        tier_report.build_report(con, out)
    text = out.read_text()
    assert text.count("data:image/png;base64,") >= 4  # one share chart per dimension
    for segment in ["high_value", "platinum", "churned", "prospect"]:
        assert segment in text
