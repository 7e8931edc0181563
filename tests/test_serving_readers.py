"""The serving copy read by a separate reader process (``tests/serving_reader.py``) while the
warehouse is rebuilt and republished: two growing builds published in turns (slow, in
``make test``), and the long variant with the real Dagster job rebuilding four times and failing
once (heavy, ``make test-heavy``)."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from customer_warehouse import serving
from orchestration.defs import build_definitions
from orchestration.defs.serving.assets import SERVING_KEY

from .conftest import Warehouse, build_warehouse
from .dagster_job import isolated_dbt_paths, materialized, run_job, step_failures
from .serving_checks import assert_nothing_personal, content_mismatches, personal_values_found
from .serving_helpers import KEY, READER

# --------------------------------------------------------------------------------------------
# A reader in its own process while the warehouse is rebuilt and republished
# --------------------------------------------------------------------------------------------

START = date(2025, 1, 1)
#: (customers, last order day) per build: each one has more customers and more history.
GROWTH = ((60, START + timedelta(days=100)), (120, START + timedelta(days=150)))


def write_growing_shop(folder: Path, customers: int, last_day: date) -> Path:
    """Customers G0000... with their orders up to ``last_day``; a larger shop extends a smaller
    one (each customer's rows come from its own seeded generator). Customers carry an e-mail,
    a phone and a name, and consent, so crm_reminders has contact addresses to hold back."""
    folder.mkdir(parents=True, exist_ok=True)
    orders, people = [], []
    for i in range(customers):
        rng = random.Random(1000 + i)
        signed_up = START + timedelta(days=rng.randint(0, 40))
        people.append((f"G{i:04d}", signed_up.isoformat(), f"g{i:04d}@shop.example",
                       f"1380000{i:04d}", f"Name {i:04d}", "yes"))  # fmt: skip
        for j in range(rng.randint(1, 6)):
            day = signed_up + timedelta(days=rng.randint(0, 150))
            if day <= last_day:
                orders.append((f"G{i:04d}-{j}", f"G{i:04d}", f"{day.isoformat()}T12:00:00+08:00",
                               f"{rng.uniform(20, 500):.2f}", "app", "completed"))  # fmt: skip
    for name, header, rows in (
        (
            "orders",
            ["order_id", "customer_id", "ordered_at", "amount", "channel", "status"],
            orders,
        ),
        (
            "customers",
            ["customer_id", "signed_up_at", "email", "phone", "full_name", "marketing_consent"],
            people,
        ),
    ):
        with (folder / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
    return folder


def contact_values(raw: Path) -> set[str]:
    with (raw / "customers.csv").open(encoding="utf-8") as handle:
        return {v for row in csv.DictReader(handle) for v in (row["email"], row["phone"])}


class Reader:
    """tests/serving_reader.py in its own process, stopped by a file; ``stop`` returns its
    summary (reads, versions seen with their customer counts, errors, inconsistent reads)."""

    def __init__(self, serving_dir: Path, work: Path, pause: float = 0.02) -> None:
        self.stop_file = work / "stop-reader"
        self.proc = subprocess.Popen(
            [sys.executable, str(READER), str(serving_dir), str(self.stop_file), str(pause)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> dict:
        self.stop_file.touch()
        out, err = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, err[-2000:]
        return json.loads(out.strip().splitlines()[-1])


def report(summary: dict, what: str) -> str:
    return (
        f"reader during {what}: {summary['reads']} reads of {len(summary['versions'])} "
        f"versions, {summary['errors']} errors, {summary['lock_errors']} lock errors, "
        f"{summary['inconsistent_reads']} inconsistent reads"
    )


@pytest.fixture(scope="module")
def growing_warehouses(tmp_path_factory) -> list[Warehouse]:
    """Two builds of a growing shop (raw load + dbt build of tier_summary and everything it
    needs, as in production but without the Python marts), once for the module."""
    work = tmp_path_factory.mktemp("serving_growth")
    return [
        build_warehouse(
            write_growing_shop(work / f"raw{stage}", customers, last_day),
            work / f"build{stage}",
            select="+tier_summary",
            exclude_unit_tests=True,
        )
        for stage, (customers, last_day) in enumerate(GROWTH)
    ]


@pytest.mark.slow
def test_a_reader_process_reads_consistently_while_builds_are_republished(
    growing_warehouses, tmp_path
):
    """A separate reader process queries current in a loop while the two builds are published
    in turns, twenty times, every publish switching and pruning (keep 2) under its reads:
    zero errors, zero lock errors, every read consistent with the manifest of its version."""
    out = tmp_path / "serving"
    reader = Reader(out, tmp_path)
    published = []
    try:
        for turn in range(20):
            build = growing_warehouses[turn % len(growing_warehouses)]
            published.append(serving.publish(build.path, out, keep=2, key=KEY))
            time.sleep(0.2)
    finally:
        summary = reader.stop()
    print("\n" + report(summary, "20 publishes"))
    assert summary["errors"] == 0, summary["first_errors"]
    assert summary["lock_errors"] == 0
    assert summary["inconsistent_reads"] == 0, summary["inconsistent"]
    assert summary["reads"] >= 40
    assert len(summary["versions"]) >= 10  # it read across many switches
    counts = [
        build.scalar("select count(*) from marts.customer_tiers") for build in growing_warehouses
    ]
    assert counts[0] < counts[1]
    assert set(summary["versions"].values()) == set(counts)
    assert [v.id for v in published][-2:] == serving.list_versions(out)
    # Each version holds exactly what its build holds.
    for version, build in zip(published[-2:], growing_warehouses, strict=True):
        assert content_mismatches(build.path, version.manifest, KEY) == []


@pytest.mark.slow
def test_a_published_build_holds_no_personal_data(growing_warehouses, tmp_path):
    build = growing_warehouses[-1]
    version = serving.publish(build.path, tmp_path / "serving", key=KEY)
    assert_nothing_personal(version.path)
    assert personal_values_found(version.path, contact_values(build.raw_dir)) == []
    assert personal_values_found(version.path, ["g0001@shop.example"]) == []
    with build.connect() as con:  # the values are in the warehouse: the scan would find them
        assert (
            con.execute(
                "select count(*) from staging.stg_shop__customers "
                "where email = 'g0001@shop.example'"
            ).fetchone()[0]
            == 1
        )


# --------------------------------------------------------------------------------------------
# The long variant with the real job (make test-heavy)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def job_defs(tmp_path_factory) -> Iterator[dg.Definitions]:
    with isolated_dbt_paths(tmp_path_factory.mktemp("serving_dbt")):
        yield build_definitions()


def _corrupt_surveys(warehouse: Path, corrupt: bool) -> None:
    """A duplicated survey response (as from a bad manual fix) fails the blocking dbt test
    unique(response_id); ``corrupt=False`` removes it again."""
    with duckdb.connect(str(warehouse)) as con:
        if corrupt:
            con.execute(
                "insert into raw.survey_responses (response_id, customer_id, submitted_at, nps, "
                "satisfaction, source_file, source_row) values "
                "('dup-1', 'G0001', timestamp '2025-03-01 10:00:00', 9, 5, 'manual.csv', 1), "
                "('dup-1', 'G0002', timestamp '2025-03-02 10:00:00', 3, 2, 'manual.csv', 2)"
            )
        else:
            con.execute("delete from raw.survey_responses where source_file = 'manual.csv'")


@pytest.mark.heavy
def test_a_reader_process_across_real_rebuilds_and_a_failed_one(job_defs, tmp_path):
    """The job four times on a shop growing from 200 to 800 customers (from 200 on the models
    are fitted, not the fallback), a build failing a blocking check after the second, and the
    reader process reading throughout. Each good build publishes exactly what it built and is
    read; the failed one publishes nothing and the reader stays on the last good version."""
    warehouse = tmp_path / "warehouse.duckdb"
    out = tmp_path / "serving"
    reader = Reader(out, tmp_path)
    published = []
    try:
        for stage, customers in enumerate((200, 400, 600, 800)):
            raw = write_growing_shop(
                tmp_path / f"raw{stage}", customers, START + timedelta(days=120 + 10 * stage)
            )
            result = run_job(job_defs, raw, warehouse)
            assert result.success, step_failures(result)
            version_id = materialized(result)[SERVING_KEY]["version_id"].value
            assert serving.current_version(out) == version_id
            assert content_mismatches(warehouse, serving.read_manifest(out), KEY) == []
            published.append(version_id)
            time.sleep(1)
            if stage == 1:
                _corrupt_surveys(warehouse, corrupt=True)
                failed = run_job(job_defs, raw, warehouse)
                assert not failed.success
                assert SERVING_KEY not in materialized(failed)
                assert serving.current_version(out) == version_id
                _corrupt_surveys(warehouse, corrupt=False)
    finally:
        summary = reader.stop()
    print("\n" + report(summary, "4 good and 1 failed real builds"))
    assert summary["errors"] == 0, summary["first_errors"]
    assert summary["inconsistent_reads"] == 0, summary["inconsistent"]
    assert list(summary["versions"]) == published  # in order, nothing else
    counts = list(summary["versions"].values())
    assert counts == sorted(counts) and len(set(counts)) == 4
    assert_nothing_personal(out / "current")
    assert personal_values_found(out / "current", contact_values(raw)) == []
