"""Personal data: one list of personal columns, the keyed pseudonym and its key, the contact
export (the one exit for addresses: consent only, owner-only files, atomic, idempotent)."""

from __future__ import annotations

import csv
import stat
from datetime import date
from pathlib import Path

import duckdb
import pytest

from customer_warehouse import crm_export, privacy
from customer_warehouse.config import DEFAULT_RAW_DIR, ConfigError, load_settings
from orchestration.defs.metadata import preview

KEY = b"k" * 32


def test_personal_columns_come_from_the_seed_only():
    with privacy.PERSONAL_COLUMNS_SEED.open(newline="") as handle:
        listed = {row["column_name"] for row in csv.DictReader(handle)}
    assert {"email", "phone", "full_name", "birth_date", "contact_address"} <= listed
    assert privacy.personal_columns() == frozenset(listed)
    assert privacy.without_personal(["customer_id", "Email", "age_band", "PHONE"]) == [
        "customer_id",
        "age_band",
    ]


def test_previews_in_dagster_never_show_personal_columns():
    with duckdb.connect() as con:
        con.execute("create table t as select 'c1' as customer_id, 'a@b.cn' as email, 3 as n")
        shown = preview(con, "t")
    assert "customer_id" in shown and "a@b.cn" not in shown
    assert "| email" not in shown and "not shown: email" in shown


def test_pseudonym_is_a_stable_keyed_hmac():
    first = privacy.pseudonym(KEY, "C0001")
    assert first == privacy.pseudonym(KEY, "C0001")
    assert len(first) == 64 and first != privacy.pseudonym(KEY, "C0002")
    assert first != privacy.pseudonym(b"x" * 32, "C0001")  # no key, no link
    assert privacy.pseudonym(KEY, None) is None
    # Known value (RFC 2104 construction with SHA-256), so other systems can reproduce it.
    import hashlib
    import hmac

    assert first == hmac.new(KEY, b"C0001", hashlib.sha256).hexdigest()


def test_a_real_run_without_a_key_stops_with_how_to_make_one(tmp_path):
    with pytest.raises(ConfigError) as err:
        privacy.pii_key(tmp_path, {})
    assert "CW_PII_KEY" in str(err.value) and "secrets.token_hex" in str(err.value)
    with pytest.raises(ConfigError, match="at least 32"):
        privacy.pii_key(tmp_path, {"CW_PII_KEY": "short"})
    key, source = privacy.pii_key(tmp_path, {"CW_PII_KEY": "z" * 40})
    assert key == b"z" * 40 and source == "CW_PII_KEY"


def test_the_demo_generates_an_owner_only_key_once_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(privacy, "DEMO_KEY_PATH", tmp_path / "data" / "pii_key")
    said: list[str] = []
    key, source = privacy.pii_key(DEFAULT_RAW_DIR, {}, log=said.append)
    again, _ = privacy.pii_key(DEFAULT_RAW_DIR, {})
    assert key == again and len(key) == 64 and source.endswith("pii_key")
    assert stat.S_IMODE((tmp_path / "data" / "pii_key").stat().st_mode) == 0o600
    assert "generated pseudonym key" in said[0] and "CW_PII_KEY" in said[0]


def test_export_dir_setting_is_checked(tmp_path):
    (tmp_path / "a_file").write_text("x")
    env = {"CW_RAW_DIR": str(tmp_path), "CW_EXPORT_DIR": str(tmp_path / "a_file")}
    with pytest.raises(ConfigError, match="CW_EXPORT_DIR"):
        load_settings(env)
    env["CW_EXPORT_DIR"] = str(tmp_path / "exports")
    assert load_settings(env).export_dir == tmp_path / "exports"


def _reminder_warehouse(con) -> None:
    con.execute("create schema marts; create schema intermediate")
    con.execute(
        "create table marts.crm_reminders as select * from (values "
        "('c1', 'win_back', date '2025-06-30', 'r1', 'email', 'low_value', 'silent', "
        "'ordinary', 'low_cost_win_back'), "
        "('c2', 'birthday_greeting', date '2025-07-02', 'r2', 'sms', 'potential', 'active', "
        "'silver', 'upgrade_nudge'), "
        "('c3', 'win_back', date '2025-06-30', 'r3', 'email', 'ordinary', 'silent', "
        "'ordinary', 'low_cost_win_back')) as t(customer_id, reminder_type, due_date, reason, "
        "contact_channel, value_tier, lifecycle_stage, membership_level, recommended_action)"
    )
    con.execute(
        "create table intermediate.int_customer_contacts_filtered_to_consent as select * from "
        "(values ('c1', 'email', 'c1@example.com', null::date), "
        "('c2', 'sms', '13800000002', date '1990-07-02')) "
        "as t(customer_id, contact_channel, contact_address, birth_date)"
    )


def test_contact_lists_are_owner_only_files_one_per_list(tmp_path):
    with duckdb.connect() as con:
        _reminder_warehouse(con)
        written = crm_export.export_contact_lists(
            con, tmp_path / "exports", date(2025, 6, 30), KEY, log=lambda _: None
        )
    folder = tmp_path / "exports" / "crm" / "2025-06-30"
    assert {item.reminder_type: item.rows for item in written} == {
        "birthday_greeting": 1,
        "win_back": 1,  # c3 has no consented address: never in a file
    }
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    with (folder / "win_back.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [
        {
            "customer_id": "c1",
            "customer_key": privacy.pseudonym(KEY, "c1"),
            "reminder_type": "win_back",
            "due_date": "2025-06-30",
            "reason": "r1",
            "contact_channel": "email",
            "contact_address": "c1@example.com",
            "value_tier": "low_value",
            "lifecycle_stage": "silent",
            "membership_level": "ordinary",
            "recommended_action": "low_cost_win_back",
        }
    ]
    assert not list(folder.glob(".*.tmp"))


def test_a_rerun_replaces_its_own_date_and_drops_a_list_that_emptied(tmp_path):
    out = tmp_path / "exports"
    with duckdb.connect() as con:
        _reminder_warehouse(con)
        crm_export.export_contact_lists(con, out, date(2025, 6, 30), KEY, log=lambda _: None)
        before = (out / "crm" / "2025-06-30" / "win_back.csv").read_bytes()
        crm_export.export_contact_lists(con, out, date(2025, 6, 30), KEY, log=lambda _: None)
        assert (out / "crm" / "2025-06-30" / "win_back.csv").read_bytes() == before
        con.execute("delete from marts.crm_reminders where reminder_type = 'birthday_greeting'")
        crm_export.export_contact_lists(con, out, date(2025, 6, 30), KEY, log=lambda _: None)
    assert sorted(p.name for p in (out / "crm" / "2025-06-30").iterdir()) == ["win_back.csv"]


def test_nothing_in_the_marts_is_named_like_personal_data():
    """The dbt test reads the same seed; this is the Python twin for the contracts' yml."""
    import yaml

    names = []
    for path in Path(privacy.PROJECT_DIR, "models", "marts").glob("*.yml"):
        for model in yaml.safe_load(path.read_text())["models"]:
            names += [(model["name"], c["name"]) for c in model.get("columns", [])]
    assert names and [n for n in names if privacy.is_personal(n[1])] == []
