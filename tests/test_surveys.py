"""Survey ingestion: CSV and JSON, every reject reason, idempotence, the changed-file rule,
malformed files, and rows = accepted + rejected for every file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from customer_warehouse.ingestion import REJECT_REASONS, ingest_surveys

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
HEADER = "response_id,customer_id,submitted_at,nps,satisfaction,comment,need_tags\n"


@pytest.fixture
def con(tmp_path: Path):
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    yield connection
    connection.close()


@pytest.fixture
def surveys(tmp_path: Path) -> Path:
    folder = tmp_path / "surveys"
    folder.mkdir()
    return folder


def ingest(con, folder, **kwargs):
    return ingest_surveys(con, folder, now=NOW, **kwargs)


def rows(con, sql: str, params: list | None = None) -> list[tuple]:
    return con.execute(sql, params or []).fetchall()


def responses(con) -> list[tuple]:
    return rows(
        con,
        "select response_id, customer_id, submitted_at, nps, satisfaction, comment, need_tags, "
        "unknown_need_tags, source_file, source_row from raw.survey_responses "
        "order by source_file, source_row",
    )


def rejects(con) -> list[tuple]:
    return rows(
        con,
        "select source_file, source_row, reject_reason from raw.survey_rejects "
        "order by source_file, source_row",
    )


def assert_nothing_lost(con) -> None:
    """rows = accepted + rejected for every ingested file, and the counts match the tables."""
    mismatches = rows(
        con,
        """
        select f.source_file, f.rows, f.accepted, f.rejected,
            (select count(*) from raw.survey_responses as r
             where r.source_file = f.source_file and r.file_sha256 = f.file_sha256) as stored,
            (select count(*) from raw.survey_rejects as j
             where j.source_file = f.source_file and j.file_sha256 = f.file_sha256) as refused
        from raw.survey_files as f
        where f.status = 'ingested'
            and (f.rows <> f.accepted + f.rejected or f.accepted <> stored or f.rejected <> refused)
        """,
    )
    assert mismatches == []
    # Only the current version of a file has rows.
    assert rows(
        con,
        """
        select count(*) from (
            select source_file, file_sha256 from raw.survey_responses
            union select source_file, file_sha256 from raw.survey_rejects
        ) as stored
        anti join raw.survey_files as f
            on f.source_file = stored.source_file and f.file_sha256 = stored.file_sha256
            and f.status = 'ingested'
        """,
    ) == [(0,)]


# --------------------------------------------------------------------------------------------
# Reading and normalizing
# --------------------------------------------------------------------------------------------


def test_csv_and_json_are_typed_normalized_and_stored_in_utc(con, surveys: Path) -> None:
    (surveys / "a.csv").write_text(
        HEADER
        + "R1,C1,2025-05-01T10:00:00+08:00,9,5,Great stuff ,Quality|price| SERVICE|quality\n"
        + 'R2,C2,2025-05-02 09:30,3,,"slow, very slow",delivery|gift wrap|Speed\n'
        + ",C3,2025-05-03T00:00:00Z,,2,,\n",
        encoding="utf-8",
    )
    (surveys / "b.json").write_text(
        json.dumps(
            [
                {
                    "response_id": "J1",
                    "customer_id": 42,
                    "submitted_at": "2025-05-04T23:30:00-02:00",
                    "nps": 10,
                    "satisfaction": 4.0,
                    "comment": "好",
                    "need_tags": ["customization", "Price", "vip"],
                },
                {
                    "customer_id": "C5",
                    "submitted_at": "2025-05-05T08:00:00",
                    "nps": "7",
                    "satisfaction": None,
                    "need_tags": "service|delivery",
                },
            ],
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    report = ingest(con, surveys)
    assert report.ingested == ["a.csv", "b.json"] and report.failed == {}
    assert (report.rows_accepted, report.rows_rejected) == (5, 0)
    assert responses(con) == [
        ("R1", "C1", datetime(2025, 5, 1, 2, 0), 9, 5, "Great stuff", "price|quality|service",
         None, "a.csv", 1),
        ("R2", "C2", datetime(2025, 5, 2, 9, 30), 3, None, "slow, very slow", "delivery",
         "gift wrap|speed", "a.csv", 2),
        ("a.csv#3", "C3", datetime(2025, 5, 3, 0, 0), None, 2, None, None, None, "a.csv", 3),
        ("J1", "42", datetime(2025, 5, 5, 1, 30), 10, 4, "好", "customization|price", "vip",
         "b.json", 1),
        ("b.json#2", "C5", datetime(2025, 5, 5, 8, 0), 7, None, None, "delivery|service", None,
         "b.json", 2),
    ]  # fmt: skip
    types = dict(
        rows(
            con,
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'raw' and table_name = 'survey_responses'",
        )
    )
    assert types["submitted_at"] == "TIMESTAMP"
    assert types["nps"] == types["satisfaction"] == "INTEGER"
    assert_nothing_lost(con)


def test_timestamps_without_offset_can_be_read_in_a_source_timezone(con, surveys: Path) -> None:
    (surveys / "a.csv").write_text(HEADER + "R1,C1,2025-05-01 10:00,9,5,,\n", encoding="utf-8")
    ingest(con, surveys, naive_timezone="Asia/Shanghai")
    assert rows(con, "select submitted_at from raw.survey_responses") == [
        (datetime(2025, 5, 1, 2, 0),)
    ]


def test_minimal_csv_without_optional_columns(con, surveys: Path) -> None:
    (surveys / "min.csv").write_text(
        "\ufeffCustomer_ID , submitted_at,NPS,satisfaction\n"
        "C1,2025-01-01,8,4\n\nC2,2025-01-02,0,1\n",
        encoding="utf-8",
    )
    report = ingest(con, surveys)
    assert report.rows_accepted == 2
    assert [(r[0], r[1], r[3], r[4], r[9]) for r in responses(con)] == [
        ("min.csv#1", "C1", 8, 4, 1),
        ("min.csv#2", "C2", 0, 1, 2),  # blank lines are not records
    ]


# --------------------------------------------------------------------------------------------
# Reject reasons
# --------------------------------------------------------------------------------------------

CSV_REJECTS = {
    "missing_customer_id": "X1, ,2025-05-01,9,5,,",
    "unparseable_submitted_at": "X2,C1,01/05/2025,9,5,,",
    "future_submitted_at": "X3,C1,2025-06-01T12:00:01Z,9,5,,",
    "missing_scores": "X4,C1,2025-05-01,, ,,",
    "nps_not_integer": "X5,C1,2025-05-01,7.5,5,,",
    "nps_out_of_range": "X6,C1,2025-05-01,11,5,,",
    "satisfaction_not_integer": "X7,C1,2025-05-01,7,good,,",
    "satisfaction_out_of_range": "X8,C1,2025-05-01,7,0,,",
    "wrong_field_count": "X9,C1,2025-05-01,7,5",
}


@pytest.mark.parametrize("reason", sorted(CSV_REJECTS))
def test_each_csv_reject_reason(con, surveys: Path, reason: str) -> None:
    line = CSV_REJECTS[reason]
    (surveys / "s.csv").write_text(HEADER + "OK1,C9,2025-05-01,9,5,,\n" + line + "\n")
    report = ingest(con, surveys)
    assert rejects(con) == [("s.csv", 2, reason)]
    assert report.reject_reasons == {reason: 1}
    (raw,) = rows(con, "select raw_record from raw.survey_rejects")[0]
    assert json.loads(raw)["response_id"] == line.split(",")[0]
    assert [r[0] for r in responses(con)] == ["OK1"]
    assert_nothing_lost(con)


JSON_REJECTS = {
    "record_not_an_object": ["not an object"],
    "invalid_customer_id": {"customer_id": {"id": 1}, "submitted_at": "2025-05-01", "nps": 1},
    "missing_customer_id": {"submitted_at": "2025-05-01", "nps": 1},
    "unparseable_submitted_at": {"customer_id": "C1", "submitted_at": 20250501, "nps": 1},
    "missing_scores": {"customer_id": "C1", "submitted_at": "2025-05-01", "nps": None},
    "nps_not_integer": {"customer_id": "C1", "submitted_at": "2025-05-01", "nps": True},
    "nps_out_of_range": {"customer_id": "C1", "submitted_at": "2025-05-01", "nps": -1},
    "satisfaction_out_of_range": {
        "customer_id": "C1",
        "submitted_at": "2025-05-01",
        "satisfaction": 6,
    },
    "invalid_need_tags": {
        "customer_id": "C1",
        "submitted_at": "2025-05-01",
        "nps": 5,
        "need_tags": ["price", 3],
    },
}


@pytest.mark.parametrize("reason", sorted(JSON_REJECTS))
def test_each_json_reject_reason(con, surveys: Path, reason: str) -> None:
    good = {"customer_id": "C9", "submitted_at": "2025-05-01", "nps": 9, "satisfaction": 5}
    bad = JSON_REJECTS[reason]
    (surveys / "s.json").write_text(json.dumps([good, bad]))
    ingest(con, surveys)
    assert rejects(con) == [("s.json", 2, reason)]
    assert json.loads(rows(con, "select raw_record from raw.survey_rejects")[0][0]) == bad
    assert_nothing_lost(con)


def test_reject_reasons_listed_are_all_tested() -> None:
    assert set(REJECT_REASONS) == set(CSV_REJECTS) | set(JSON_REJECTS) | {"duplicate_response_id"}


def test_duplicate_response_id_rejects_the_later_one(con, surveys: Path) -> None:
    (surveys / "a.csv").write_text(
        HEADER + "D1,C1,2025-05-01,9,5,first,\nD1,C2,2025-05-02,1,1,same file,\n"
    )
    (surveys / "b.json").write_text(
        json.dumps([{"response_id": "D1", "customer_id": "C3", "submitted_at": "2025-05-03",
                     "nps": 5}])
    )  # fmt: skip
    ingest(con, surveys)
    assert [(r[0], r[5]) for r in responses(con)] == [("D1", "first")]
    assert rejects(con) == [
        ("a.csv", 2, "duplicate_response_id"),
        ("b.json", 1, "duplicate_response_id"),
    ]
    # A later run's file loses against what is already stored, too.
    (surveys / "c.csv").write_text(HEADER + "D1,C4,2025-05-04,5,5,,\nD2,C4,2025-05-04,5,5,,\n")
    ingest(con, surveys)
    assert rejects(con)[-1] == ("c.csv", 1, "duplicate_response_id")
    assert [r[0] for r in responses(con)] == ["D1", "D2"]
    assert_nothing_lost(con)


def test_a_renamed_copy_of_an_ingested_file_is_not_loaded_twice(con, surveys: Path) -> None:
    content = HEADER + ",C1,2025-05-01,9,5,,\n"  # generated ids: they contain the file name
    (surveys / "a.csv").write_text(content)
    ingest(con, surveys)
    (surveys / "a (copy).csv").write_text(content)
    report = ingest(con, surveys)
    assert "same content as 'a.csv'" in report.failed["a (copy).csv"]
    assert [r[0] for r in responses(con)] == ["a.csv#1"]


def test_an_invalid_row_does_not_claim_its_response_id(con, surveys: Path) -> None:
    (surveys / "a.csv").write_text(
        HEADER + "D1,C1,2025-05-01,99,5,bad score,\nD1,C1,2025-05-01,9,5,good,\n"
    )
    ingest(con, surveys)
    assert rejects(con) == [("a.csv", 1, "nps_out_of_range")]
    assert [(r[0], r[5]) for r in responses(con)] == [("D1", "good")]


# --------------------------------------------------------------------------------------------
# Idempotence and changed files
# --------------------------------------------------------------------------------------------


def test_running_twice_adds_nothing(con, surveys: Path) -> None:
    (surveys / "a.csv").write_text(HEADER + "R1,C1,2025-05-01,9,5,,\nR2,,2025-05-01,9,5,,\n")
    (surveys / "b.json").write_text("[")
    first = ingest(con, surveys)
    assert first.ingested == ["a.csv"] and list(first.failed) == ["b.json"]
    snapshot = (
        responses(con),
        rejects(con),
        rows(con, "select * from raw.survey_files order by all"),
    )
    second = ingest_surveys(con, surveys, now=datetime(2025, 6, 2, tzinfo=UTC))
    assert second.unchanged == ["a.csv", "b.json"]
    assert second.ingested == second.replaced == [] and second.failed == {}
    assert (second.rows_accepted, second.rows_rejected) == (0, 0)
    assert (
        responses(con),
        rejects(con),
        rows(con, "select * from raw.survey_files order by all"),
    ) == snapshot


def test_a_changed_file_replaces_its_previous_rows(con, surveys: Path) -> None:
    path = surveys / "a.csv"
    other = surveys / "b.csv"
    other.write_text(HEADER + "B1,C7,2025-05-01,6,3,,\n")
    path.write_text(HEADER + "R1,C1,2025-05-01,9,5,,\nR2,C2,2025-05-01,99,5,,\n")
    ingest(con, surveys)
    version_one = rows(con, "select file_sha256 from raw.survey_files where source_file='a.csv'")

    path.write_text(HEADER + "R1,C1,2025-05-01,10,5,corrected,\nR3,C3,2025-05-02,4,2,,\n")
    report = ingest_surveys(con, surveys, now=datetime(2025, 6, 2, tzinfo=UTC))
    assert report.replaced == ["a.csv"] and report.unchanged == ["b.csv"]
    assert [(r[0], r[3], r[5]) for r in responses(con)] == [
        ("R1", 10, "corrected"),  # not a duplicate of its own previous version
        ("R3", 4, None),
        ("B1", 6, None),
    ]
    assert rejects(con) == []  # the old version's reject went with it
    assert rows(
        con,
        "select file_sha256 = ? as is_first, status, rows, accepted, rejected "
        "from raw.survey_files where source_file = 'a.csv' order by ingested_at, status",
        [version_one[0][0]],
    ) == [(True, "replaced", 2, 1, 1), (False, "ingested", 2, 2, 0)]
    assert_nothing_lost(con)

    # Going back to the first content brings its rows back.
    path.write_text(HEADER + "R1,C1,2025-05-01,9,5,,\nR2,C2,2025-05-01,99,5,,\n")
    assert ingest_surveys(con, surveys, now=datetime(2025, 6, 3, tzinfo=UTC)).replaced == ["a.csv"]
    assert rows(
        con, "select status from raw.survey_files where source_file = 'a.csv' order by ingested_at"
    ) == [("replaced",), ("ingested",)]
    assert sorted(r[0] for r in responses(con)) == ["B1", "R1"]
    assert rejects(con) == [("a.csv", 2, "nps_out_of_range")]
    assert_nothing_lost(con)


def test_a_changed_file_that_is_broken_keeps_the_previous_rows(con, surveys: Path) -> None:
    path = surveys / "a.json"
    path.write_text(json.dumps([{"customer_id": "C1", "submitted_at": "2025-05-01", "nps": 8}]))
    ingest(con, surveys)
    path.write_text('[{"customer_id": "C1",')
    report = ingest_surveys(con, surveys, now=datetime(2025, 6, 2, tzinfo=UTC))
    assert "previous version are kept" in report.failed["a.json"]
    assert [r[1] for r in responses(con)] == ["C1"]
    assert rows(con, "select status from raw.survey_files order by ingested_at, status") == [
        ("ingested",),
        ("failed",),
    ]
    assert_nothing_lost(con)


# --------------------------------------------------------------------------------------------
# Malformed files and empty folders
# --------------------------------------------------------------------------------------------


def test_malformed_files_are_reported_by_name_and_the_others_are_ingested(
    con, surveys: Path
) -> None:
    (surveys / "1_bad.json").write_text('[{"customer_id": "C1", "nps": 5,}]')
    (surveys / "2_object.json").write_text('{"responses": []}')
    (surveys / "3_columns.csv").write_text("customer,when,nps\nC1,2025-05-01,5\n")
    (surveys / "4_latin1.csv").write_bytes(
        (HEADER + "R9,C1,2025-05-01,5,5,très bien,\n").encode("latin-1")
    )
    (surveys / "5_empty.csv").write_text("")
    (surveys / "6_good.csv").write_text(HEADER + "R1,C1,2025-05-01,9,5,,\n")
    (surveys / "notes.txt").write_text("not a survey")
    report = ingest(con, surveys)

    assert report.ingested == ["6_good.csv"] and report.ignored == ["notes.txt"]
    assert report.has_failures
    errors = report.failed
    assert sorted(errors) == ["1_bad.json", "2_object.json", "3_columns.csv", "4_latin1.csv",
                              "5_empty.csv"]  # fmt: skip
    assert "'1_bad.json' is not valid JSON" in errors["1_bad.json"]
    assert "line 1" in errors["1_bad.json"] and "Fix the file" in errors["1_bad.json"]
    assert "holds a JSON dict, not an array" in errors["2_object.json"]
    assert (
        "lacks the required column(s) customer_id, submitted_at, satisfaction"
        in errors["3_columns.csv"]
    )
    assert "Add them to the header" in errors["3_columns.csv"]
    assert "'4_latin1.csv' is not valid UTF-8" in errors["4_latin1.csv"]
    assert "Export it again as UTF-8" in errors["4_latin1.csv"]
    assert "'5_empty.csv' is empty" in errors["5_empty.csv"]

    stored = rows(
        con, "select source_file, status, error from raw.survey_files order by source_file"
    )
    assert [(name, status) for name, status, _ in stored] == [
        ("1_bad.json", "failed"),
        ("2_object.json", "failed"),
        ("3_columns.csv", "failed"),
        ("4_latin1.csv", "failed"),
        ("5_empty.csv", "failed"),
        ("6_good.csv", "ingested"),
    ]
    assert all(error == errors[name] for name, status, error in stored if status == "failed")
    assert [r[0] for r in responses(con)] == ["R1"]
    assert rows(con, "select count(*) from raw.survey_rejects") == [(0,)]
    assert_nothing_lost(con)

    # Fixing a failed file (new content) ingests it.
    (surveys / "4_latin1.csv").write_text(HEADER + "R9,C1,2025-05-01,5,5,très bien,\n")
    fixed = ingest(con, surveys)
    assert fixed.ingested == ["4_latin1.csv"]
    assert rows(con, "select comment from raw.survey_responses where response_id = 'R9'") == [
        ("très bien",)
    ]


def test_csv_with_broken_quotes_fails_as_a_whole(con, surveys: Path) -> None:
    # Without strict parsing the unterminated quote would swallow R2 into R1's comment.
    (surveys / "q.csv").write_text(HEADER + 'R1,C1,2025-05-01,9,5,"ok,\nR2,C2,2025-05-01,9,5,,\n')
    (surveys / "r.csv").write_text(HEADER + 'R3,C1,2025-05-01,9,5,"ok"x,\n')
    report = ingest(con, surveys)
    assert sorted(report.failed) == ["q.csv", "r.csv"]
    assert (
        "'q.csv' is not a readable CSV (line 3: unexpected end of data)" in report.failed["q.csv"]
    )
    assert "'r.csv' is not a readable CSV (line 2" in report.failed["r.csv"]
    assert responses(con) == [] and rejects(con) == []


@pytest.mark.parametrize("kind", ["missing", "empty", "none"])
def test_no_survey_files_gives_empty_tables(con, tmp_path: Path, kind: str) -> None:
    folder = {"missing": tmp_path / "nope", "empty": tmp_path, "none": None}[kind]
    report = ingest(con, folder)
    assert report.files_seen == 0 and not report.has_failures
    for table in ("survey_responses", "survey_rejects", "survey_files"):
        assert rows(con, f"select count(*) from raw.{table}") == [(0,)]


def test_an_older_survey_table_gets_the_missing_columns(con, surveys: Path) -> None:
    con.execute("create schema raw")
    con.execute(
        "create table raw.survey_responses (response_id varchar, customer_id varchar, "
        "submitted_at timestamp, nps integer, satisfaction integer, comment varchar, "
        "need_tags varchar, source_file varchar, source_row bigint, file_sha256 varchar, "
        "ingested_at timestamp)"
    )
    (surveys / "a.csv").write_text(HEADER + "R1,C1,2025-05-01,9,5,,price|vip\n")
    ingest(con, surveys)
    assert rows(
        con, "select response_id, need_tags, unknown_need_tags from raw.survey_responses"
    ) == [("R1", "price", "vip")]
