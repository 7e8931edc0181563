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
        document = yaml.safe_load(path.read_text())
        tables = document.get("models", [])  # and the marts the Python assets write:
        tables += [t for source in document.get("sources", []) for t in source["tables"]]
        names += [(table["name"], c["name"]) for table in tables for c in table.get("columns", [])]
    assert {"orders", "loyalty_balances"} <= {table for table, _column in names}
    assert [n for n in names if privacy.is_personal(n[1])] == []


# --------------------------------------------------------------------------------------------
# Erasure requests
# --------------------------------------------------------------------------------------------

CUSTOMERS_CSV = (
    "customer_id,email,phone,full_name,birth_date,province,marketing_consent\n"
    "c1,ann@example.com,13800000001,Ann Lee,1990-01-02,Guangdong,yes\n"
    "c2,bo@example.com,13800000002,Bo Wu,1985-05-06,Beijing,yes\n"
)
ORDERS_CSV = (
    "order_id,customer_id,ordered_at,amount\n"
    "o1,c1,2025-01-01,10\no2,c2,2025-01-02,20\no3,c1,2025-01-03\n"  # o3: too few fields
)


def _raw(tmp_path, erasure: str | None) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    (raw / "customers.csv").write_text(CUSTOMERS_CSV)
    (raw / "orders.csv").write_text(ORDERS_CSV)
    if erasure is not None:
        (raw / privacy.ERASURE_FILE).write_text(erasure)
    return raw


def test_erasure_requests_are_read_deduplicated_and_checked(tmp_path):
    assert privacy.read_erasure_requests(tmp_path) == []
    raw = _raw(tmp_path, "\ufeffCustomer_ID,requested_at\nc1,2025-07-01\n c1 ,\n\nc9,\n")
    assert privacy.read_erasure_requests(raw) == [
        privacy.ErasureRequest("c1", "2025-07-01"),
        privacy.ErasureRequest("c9", None),
    ]
    (raw / privacy.ERASURE_FILE).write_text("id\nc1\n")
    with pytest.raises(ConfigError, match="no customer_id column"):
        privacy.read_erasure_requests(raw)


def test_erased_personal_values_never_enter_the_raw_tables(tmp_path):
    from customer_warehouse import ingestion

    raw = _raw(tmp_path, "customer_id\nc1\n")
    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        ingestion.load_raw(con, raw, log=lambda _: None, encodings={})
        ingestion.load_raw(con, raw, log=lambda _: None, encodings={})  # a rerun: idempotent
        customers = con.execute(
            "select customer_id, email, phone, full_name, birth_date, province "
            "from raw.customers order by 1"
        ).fetchall()
        lines = con.execute(
            "select _raw_line from raw.orders where _load_error is not null"
        ).fetchall()
        requests = con.execute(
            "select customer_id, applied_at is not null, compacted_at from raw.erasure_requests"
        ).fetchall()
        orders = con.execute("select count(*) from raw.orders where customer_id = 'c1'").fetchone()
    assert customers == [
        ("c1", None, None, None, None, "Guangdong"),  # the id and the region stay
        ("c2", "bo@example.com", "13800000002", "Bo Wu", "1985-05-06", "Beijing"),
    ]
    assert lines == [(None,)]  # the malformed line names c1
    assert requests == [("c1", True, None)]  # recorded once, pending compaction
    assert orders == (1,)  # orders are not personal data: they still count


def test_erasure_blanks_survey_free_text_already_ingested(tmp_path):
    from customer_warehouse.ingestion import surveys

    with duckdb.connect() as con:
        con.execute("create schema raw")
        surveys.create_survey_tables(con)
        con.execute(
            "insert into raw.survey_responses (response_id, customer_id, comment) values "
            "('r1', 'c1', 'I am Ann from Foshan'), ('r2', 'c2', 'fine')"
        )
        con.execute(
            "insert into raw.survey_rejects (raw_record) values "
            '(\'{"customer_id": "c1", "comment": "Ann again"}\')'
        )
        assert privacy.erase_from_surveys(con) == 0  # no request table yet: nothing to do
        privacy.record_erasure_requests(con, [privacy.ErasureRequest("c1")])
        assert privacy.erase_from_surveys(con) == 2
        assert privacy.erase_from_surveys(con) == 0  # idempotent
        assert con.execute(
            "select response_id, comment from raw.survey_responses order by 1"
        ).fetchall() == [("r1", None), ("r2", "fine")]


def test_compaction_rewrites_the_file_once_per_new_request(tmp_path):
    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create schema raw; create schema marts")
        con.execute("create table marts.t as select range as i from range(1000)")
        con.execute("create view marts.v as select count(*) as n from marts.t")
    said: list[str] = []
    assert privacy.compact_warehouse(db, log=said.append) is False  # no request table
    with duckdb.connect(str(db)) as con:
        privacy.record_erasure_requests(con, [privacy.ErasureRequest("c1")])
    inode = db.stat().st_ino
    assert privacy.compact_warehouse(db, log=said.append) is True
    assert db.stat().st_ino != inode  # a new file took the old one's place
    assert privacy.compact_warehouse(db, log=said.append) is False  # nothing pending now
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select n from marts.v").fetchone() == (1000,)
        assert privacy.pending_erasures(con) == []
    assert not (tmp_path / "w.duckdb.compacting").exists()
    assert "erasure of 1 customer" in said[0]


def test_erasure_removes_rows_from_every_contact_list_ever_written(tmp_path):
    out = tmp_path / "exports"
    with duckdb.connect() as con:
        _reminder_warehouse(con)
        crm_export.export_contact_lists(con, out, date(2025, 6, 29), KEY, log=lambda _: None)
        crm_export.export_contact_lists(con, out, date(2025, 6, 30), KEY, log=lambda _: None)
    assert crm_export.erase_customers(out, {"c1"}, log=lambda _: None) == 2
    for path in out.rglob("*.csv"):
        assert "c1" not in path.read_text() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "c2" in (out / "crm" / "2025-06-30" / "birthday_greeting.csv").read_text()
