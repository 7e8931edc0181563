"""The semantic layer (models/semantic/, docs/metrics.md): metric queries answered by MetricFlow's
`mf` through the read-only dbt target `metrics`, checked against the marts computed directly;
and the docs site (`make docs`): everything described, exposures naming what reads the marts,
the site served on the loopback address (heavy).

One demo warehouse is built; every query runs the real `mf` command, as `make metrics` does.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import urllib.request
from pathlib import Path

import duckdb
import pytest

from customer_warehouse import demo
from customer_warehouse.ingestion import surveys
from orchestration.defs import build_definitions

from .conftest import DBT, Warehouse, build_warehouse, dbt_env, run_dbt
from .dagster_job import isolated_dbt_paths, run_job, step_failures
from .dagster_server import free_port, wait_for
from .project_copy import project_copy

MF = str(Path(sys.executable).parent / "mf")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Warehouse:
    work = tmp_path_factory.mktemp("metrics")
    raw = work / "raw"
    demo.generate(raw, customers=300, seed=11, dirty_rate=0.01, quiet=True)
    with duckdb.connect(str(work / "warehouse.duckdb")) as con:
        surveys.ingest_surveys(con, raw / "surveys")
    built = build_warehouse(raw, work, exclude_unit_tests=True)
    # `mf` reads target/semantic_manifest.json of the project it runs in: a copy, parsed for
    # this warehouse with the read-only target, as `make metrics` does.
    project = project_copy(work)
    run_dbt(["parse", "--quiet"], _env(built, project), project=project)
    return built


def _env(warehouse: Warehouse, project: Path) -> dict[str, str]:
    env = dbt_env(warehouse.path, warehouse.work_dir, warehouse.raw_dir, CW_DBT_TARGET="metrics")
    env.pop("DBT_TARGET_PATH")
    return env | {"DBT_PROFILES_DIR": str(project)}


def mf_query(warehouse: Warehouse, *args: str) -> list[dict[str, str]]:
    """Rows of `mf query ARGS` (its CSV output), run as `make metrics` runs it."""
    out = warehouse.work_dir / "mf.csv"
    out.unlink(missing_ok=True)
    project = warehouse.work_dir / "project"
    run_dbt(
        ["query", *args, "--csv", str(out)], _env(warehouse, project), project=project, command=MF
    )
    with out.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _number(value: str) -> float | None:
    return None if value in ("", "None", "nan") else float(value)


def _close(left: float | None, right: float | None) -> bool:
    if left is None or right is None:
        return left is None and right is None
    return math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-6)


def test_revenue_and_orders_by_value_tier_match_the_marts(warehouse):
    rows = mf_query(
        warehouse,
        "--metrics",
        "revenue,orders,average_order_value",
        "--group-by",
        "customer__value_tier",
    )
    got = {row["customer__value_tier"] or None: row for row in rows}
    expected = warehouse.query(
        """
        select tiers.value_tier,
            sum(case when orders.is_purchase then orders.amount else 0 end),
            sum(case when orders.is_purchase then 1 else 0 end)
        from marts.orders as orders
        left join marts.customer_tiers as tiers on orders.customer_id = tiers.customer_id
        group by 1
        """
    )
    assert len(expected) >= 3  # several tiers: the comparison means something
    assert set(got) == {tier for tier, _revenue, _orders in expected}
    for tier, revenue, orders in expected:
        row = got[tier]
        assert _close(_number(row["revenue"]), float(revenue)), tier
        assert _number(row["orders"]) == orders, tier
        if orders:
            assert _close(_number(row["average_order_value"]), float(revenue) / orders), tier
    total = warehouse.scalar("select sum(revenue) from marts.customer_features")
    assert _close(sum(_number(row["revenue"]) for row in rows), float(total))


def test_customers_and_nps_by_region_match_the_tier_summary(warehouse):
    rows = mf_query(warehouse, "--metrics", "customers,nps", "--group-by", "customer__region")
    got = {row["customer__region"]: row for row in rows}
    summary = warehouse.query(
        "select segment, customers, nps from marts.tier_summary where dimension = 'region'"
    )
    assert len(summary) >= 3
    assert set(got) == {segment for segment, _customers, _nps in summary}
    for segment, customers, nps in summary:
        assert _number(got[segment]["customers"]) == customers, segment
        assert _close(_number(got[segment]["nps"]), nps), segment


def test_monthly_revenue_and_buyers_match_the_orders(warehouse):
    rows = mf_query(warehouse, "--metrics", "revenue,buyers", "--group-by", "metric_time__month")
    got = {row["metric_time__month"][:10]: row for row in rows}
    expected = warehouse.query(
        """
        select cast(cast(date_trunc('month', ordered_date) as date) as varchar),
            sum(case when is_purchase then amount else 0 end),
            count(distinct case when is_purchase then customer_id end)
        from marts.orders group by 1
        """
    )
    assert len(expected) >= 12
    assert set(got) == {month for month, _revenue, _buyers in expected}
    for month, revenue, buyers in expected:
        assert _close(_number(got[month]["revenue"]), float(revenue)), month
        assert _number(got[month]["buyers"]) == buyers, month


def test_repeat_purchase_rate_matches_the_features(warehouse):
    (row,) = mf_query(warehouse, "--metrics", "repeat_purchase_rate,customers_who_bought")
    repeat, bought = warehouse.query(
        "select count(*) filter (where frequency >= 1), count(*) filter (where has_purchased) "
        "from marts.customer_features"
    )[0]
    assert bought > 0 and 0 < repeat < bought
    assert _number(row["customers_who_bought"]) == bought
    assert _close(_number(row["repeat_purchase_rate"]), repeat / bought)


# --------------------------------------------------------------------------------------------
# Docs and exposures (`make docs`)
# --------------------------------------------------------------------------------------------


def _manifest(warehouse: Warehouse) -> dict:
    return json.loads((warehouse.work_dir / "project" / "target" / "manifest.json").read_text())


def test_every_model_column_metric_source_and_exposure_is_described(warehouse):
    manifest = _manifest(warehouse)
    missing = []
    for uid, node in manifest["nodes"].items():
        if node["resource_type"] not in ("model", "seed"):
            continue
        if not node.get("description", "").strip():
            missing.append(uid)
        if node["resource_type"] == "model":
            missing += [
                f"{uid}.{name}"
                for name, column in node["columns"].items()
                if not column.get("description", "").strip()
            ]
    for kind in ("sources", "metrics", "exposures", "semantic_models"):
        assert manifest[kind], kind
        missing += [uid for uid, item in manifest[kind].items() if not item["description"].strip()]
    for uid, source in manifest["sources"].items():
        missing += [f"{uid}.{n}" for n, c in source["columns"].items() if not c["description"]]
    assert missing == []


def test_exposures_name_what_reads_the_marts_python_ones_included(warehouse):
    manifest = _manifest(warehouse)
    exposures = manifest["exposures"]
    assert {e["name"] for e in exposures.values()} >= {
        "serving_copy",
        "tier_dashboard",
        "crm_reminder_lists",
        "tier_report",
    }
    read = {uid for e in exposures.values() for uid in e["depends_on"]["nodes"]}
    marts = {
        uid
        for uid, node in manifest["nodes"].items()
        if node["resource_type"] == "model" and node["schema"] == "marts"
    }
    python_marts = {uid for uid in manifest["sources"] if ".python_marts." in uid}
    # Every mart is read by something (the per-date history only through its SCD2 view).
    assert marts - read - {"model.customer_warehouse.customer_tier_history"} == set()
    assert len(python_marts) == 7 and python_marts <= read


@pytest.mark.heavy
def test_make_docs_serves_the_site_with_the_python_marts(tmp_path):
    """The real job builds a warehouse (Python marts included); the docs site generated from
    it through the read-only target shows every Python-written mart with the columns it really
    has, and is served on the loopback address."""
    raw, warehouse_path = tmp_path / "raw", tmp_path / "warehouse.duckdb"
    demo.generate(raw, customers=300, seed=11, dirty_rate=0.01, quiet=True)
    with isolated_dbt_paths(tmp_path):
        result = run_job(build_definitions(), raw, warehouse_path)
    assert result.success, step_failures(result)
    built = Warehouse(path=warehouse_path, raw_dir=raw, work_dir=tmp_path)
    project = project_copy(tmp_path)
    env = _env(built, project)
    run_dbt(["docs", "generate"], env, project=project)
    catalog = json.loads((project / "target" / "catalog.json").read_text())
    manifest = json.loads((project / "target" / "manifest.json").read_text())
    assert "model.customer_warehouse.orders" in catalog["nodes"]
    python_marts = [uid for uid in manifest["sources"] if ".python_marts." in uid]
    for uid in python_marts:
        declared = set(manifest["sources"][uid]["columns"])
        assert uid in catalog["sources"], f"{uid}: no such table in the built warehouse"
        actual = {name.lower() for name in catalog["sources"][uid]["columns"]}
        assert declared == actual, uid
    port, log = free_port(), tmp_path / "docs-serve.log"
    with log.open("w") as handle:
        server = subprocess.Popen(
            [DBT, "docs", "serve", "--host", "127.0.0.1", "--port", str(port), "--no-browser"],
            cwd=project,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:

        def page(path: str) -> bytes:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=10) as r:
                return r.read() if r.status == 200 else b""

        index = wait_for("the docs site", lambda: page(""), 120, server, log)
        assert b"dbt" in index and b"<html" in index.lower()
        served = json.loads(page("manifest.json"))
        assert "exposure.customer_warehouse.tier_dashboard" in served["exposures"]
    finally:
        server.terminate()
        server.wait(timeout=30)
