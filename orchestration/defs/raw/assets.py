"""Raw layer: the exports in CW_RAW_DIR and the survey files become the ``raw`` schema.

The asset keys are ``raw/<table>``, the same keys the dbt translator gives the dbt sources
(``source('shop', 'orders')`` → ``raw/orders``), so Dagster draws one graph from the raw tables
through staging to the marts. The logic is in ``customer_warehouse.ingestion``; this module
only runs it and reports what it did.
"""

from pathlib import Path
from typing import Any

import dagster as dg

from customer_warehouse import freshness, ingestion, privacy
from customer_warehouse.ingestion import surveys
from customer_warehouse.warehouse import scalar as warehouse_scalar
from orchestration.defs.freshness.checks import note_stale_run, raw_check_result, raw_check_spec
from orchestration.defs.metadata import counts_markdown, markdown_table, table_metadata
from orchestration.defs.resources import (
    WRITES_WAREHOUSE,
    WarehouseResource,
    fail_fast_on_data_errors,
)

RAW_GROUP = "raw"
KINDS = {"python", "duckdb"}


def raw_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", table])


def _raw_table_spec(table: str, description: str, **extra: Any) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=raw_key(table), group_name=RAW_GROUP, kinds=KINDS, description=description, **extra
    )


def _raw_file_spec(spec: ingestion.SourceSpec) -> dg.AssetSpec:
    presence = "required" if spec.required_file else "optional (an empty table when absent)"
    return _raw_table_spec(
        spec.name,
        f"`raw.{spec.name}`: `{spec.name}.csv` or `{spec.name}.parquet` from CW_RAW_DIR, or "
        f"the deliveries in `{spec.name}/`, every column as text plus `_source_file`, "
        f"`_source_row` and `_delivery`. The data is {presence}; required columns: "
        f"{', '.join(spec.required)} (docs/raw-data.md).",
    )


DELIVERIES_KEY = raw_key("deliveries")
DELIVERIES_SPEC = _raw_table_spec(
    "deliveries",
    "`raw.deliveries`: every raw file ever loaded (name, content hash, rows, when) "
    "and its status: loaded, replaced by a changed file, or removed. Incremental staging "
    "models read it to find what is new (docs/raw-data.md).",
)

ERASURE_KEY = raw_key("erasure_requests")
ERASURE_SPEC = _raw_table_spec(
    "erasure_requests",
    "`raw.erasure_requests`: every erasure request of "
    f"CW_RAW_DIR/{privacy.ERASURE_FILE} with when it was applied and compacted. Personal values "
    "of these customers are never loaded (docs/privacy.md).",
)


@dg.multi_asset(
    name="raw_files",
    specs=[*(_raw_file_spec(spec) for spec in ingestion.SOURCES), DELIVERIES_SPEC, ERASURE_SPEC],
    check_specs=[raw_check_spec(raw_key(spec.name), spec.name) for spec in ingestion.SOURCES],
    can_subset=False,
    **WRITES_WAREHOUSE,
    # `make backfill` loads the raw files in the run of the tier history's partition range
    # (so it works on an empty warehouse): once in that run.
    backfill_policy=dg.BackfillPolicy.single_run(),
    description=(
        "Load what is new or changed in the raw folder into the raw schema in one transaction "
        "(a file already loaded with the same content is not read again): a structurally "
        "broken file stops the load (RawDataError) and leaves the previous raw tables in place."
    ),
)
def raw_files(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    settings = warehouse.settings()
    # A real run without a pseudonym key stops here, before anything is replaced.
    with fail_fast_on_data_errors("Checking the pseudonym key (CW_PII_KEY)"):
        privacy.pii_key(settings.raw_dir, log=context.log.info)
    with warehouse.connect() as con:
        with fail_fast_on_data_errors(f"Loading the raw files of {settings.raw_dir}"):
            loaded = ingestion.load_raw(
                con, settings.raw_dir, log=context.log.info, encodings=settings.raw_encodings
            )
        metadata = {item.source: table_metadata(con, f"raw.{item.source}") for item in loaded}
        deliveries = ingestion.status_counts(con)
    summary = _load_summary(loaded)
    _warn_malformed(context, loaded)
    ages = freshness.source_ages(
        settings.raw_dir, [spec.name for spec in ingestion.SOURCES], settings.max_raw_age_hours
    )
    with warehouse.connect(read_only=True) as con:
        erasure_result = _erasure_result(con)
        newest_order = freshness.newest_order_at(con, now=ages[0].checked_at)
    yield _deliveries_result(loaded, deliveries, summary)
    yield erasure_result
    for item in loaded:
        yield _raw_table_result(item, metadata[item.source], summary, settings.raw_dir)
    for age in ages:
        yield raw_check_result(
            raw_key(age.source), age, newest_order if age.source == "orders" else None
        )
    note_stale_run(context, ages)


def _load_summary(loaded: list[ingestion.LoadedSource]) -> str:
    """One markdown row per raw table: what the load found and did."""
    return markdown_table(
        [
            "table",
            "file",
            "rows",
            "files new / changed / removed / unchanged",
            "malformed rows",
            "encoding",
            "delimiter",
            "ignored columns",
        ],
        [
            (
                f"raw.{item.source}",
                item.file or "(no file: empty)",
                item.rows,
                f"{len(item.new_files)} / {len(item.changed_files)} / "
                f"{len(item.removed_files)} / {len(item.unchanged_files)}",
                item.malformed_rows,
                item.encoding or "",
                repr(item.delimiter) if item.delimiter else "",
                ", ".join(item.ignored_columns),
            )
            for item in loaded
        ],
    )


def _warn_malformed(
    context: dg.AssetExecutionContext, loaded: list[ingestion.LoadedSource]
) -> None:
    for item in loaded:
        if item.malformed_rows:
            context.log.warning(
                f"{item.file}: {item.malformed_rows} malformed line(s) kept as rows with a "
                f"_load_error; staging rejects them as malformed_row (staging.*_rejects)."
            )


def _erasure_result(con) -> dg.MaterializeResult:
    requests = warehouse_scalar(con, f"select count(*) from {privacy.ERASURE_TABLE}")
    return dg.MaterializeResult(
        asset_key=ERASURE_KEY,
        metadata={
            "requests": dg.MetadataValue.int(requests),
            "pending_compaction": dg.MetadataValue.int(len(privacy.pending_erasures(con))),
        },
    )


def _deliveries_result(
    loaded: list[ingestion.LoadedSource], deliveries: dict[str, int], summary: str
) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        asset_key=DELIVERIES_KEY,
        metadata={
            **{f"files_{status}": dg.MetadataValue.int(n) for status, n in deliveries.items()},
            "files_read_this_run": dg.MetadataValue.json(
                [f for item in loaded for f in item.new_files + item.changed_files]
            ),
            "files_removed_this_run": dg.MetadataValue.json(
                [f for item in loaded for f in item.removed_files]
            ),
            "load_summary": dg.MetadataValue.md(summary),
        },
    )


def _raw_table_result(
    item: ingestion.LoadedSource, metadata: dict[str, Any], summary: str, raw_dir: Path
) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        asset_key=raw_key(item.source),
        metadata={
            **metadata,
            "source_file": dg.MetadataValue.text(item.file or "(no file: empty table)"),
            "deliveries": dg.MetadataValue.int(item.deliveries),
            "files_new": dg.MetadataValue.json(item.new_files),
            "files_changed": dg.MetadataValue.json(item.changed_files),
            "files_removed": dg.MetadataValue.json(item.removed_files),
            "files_unchanged": dg.MetadataValue.int(len(item.unchanged_files)),
            "ignored_columns": dg.MetadataValue.json(item.ignored_columns),
            "malformed_rows": dg.MetadataValue.int(item.malformed_rows),
            "raw_dir": dg.MetadataValue.path(str(raw_dir)),
            "load_summary": dg.MetadataValue.md(summary),
        },
    )


SURVEY_TABLES = ("survey_responses", "survey_rejects", "survey_files")
SURVEY_KEYS = [raw_key(table) for table in SURVEY_TABLES]
SURVEY_FILES_CHECK = "no_unreadable_survey_files"

_SURVEY_DESCRIPTIONS = {
    "survey_responses": "Accepted survey responses, typed (dbt source surveys.survey_responses).",
    "survey_rejects": "Refused survey responses with the raw record and a reject_reason.",
    "survey_files": "Every (file name, content sha256) ever seen and what became of it.",
}


@dg.multi_asset(
    name="survey_files",
    specs=[
        _raw_table_spec(
            table,
            f"`raw.{table}`: {_SURVEY_DESCRIPTIONS[table]} Written by "
            "customer_warehouse.ingestion.surveys from CW_RAW_DIR/surveys/*.csv|*.json.",
            # Erasure requests blank the free text of answers already ingested.
            deps=[ERASURE_KEY],
        )
        for table in SURVEY_TABLES
    ],
    backfill_policy=dg.BackfillPolicy.single_run(),  # as raw_files: once in a backfill run
    check_specs=[
        dg.AssetCheckSpec(
            SURVEY_FILES_CHECK,
            asset=raw_key("survey_files"),
            description="Every survey file now in the folder could be read. A broken file is "
            "recorded as failed and skipped; the others are ingested (warning, not blocking).",
            blocking=False,
        ),
        raw_check_spec(raw_key("survey_responses"), freshness.SURVEYS),
    ],
    can_subset=False,
    **WRITES_WAREHOUSE,
    description=(
        "Ingest new and changed survey files (idempotent: unchanged files add nothing). A "
        "malformed file is reported by name and does not stop the others."
    ),
)
def survey_files(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    settings = warehouse.settings()
    folder = settings.raw_dir / "surveys"
    with warehouse.connect() as con:
        with fail_fast_on_data_errors(f"Ingesting the survey files of {folder}"):
            report = surveys.ingest_surveys(con, folder)
            erased = privacy.erase_from_surveys(con)
        if erased:
            context.log.info(f"Erasure requests: free text blanked in {erased} survey row(s)")
        failing = surveys.failing_files(con, folder)
        metadata = {table: table_metadata(con, f"raw.{table}") for table in SURVEY_TABLES}
    for name, error in report.failed.items():
        context.log.warning(f"Survey file {name} was not ingested: {error}")
    run_summary = _survey_run_metadata(report, folder)
    for table in SURVEY_TABLES:
        extra = dict(run_summary)
        if table == "survey_rejects" and report.reject_reasons:
            extra["rejects_by_reason_this_run"] = dg.MetadataValue.md(
                counts_markdown(report.reject_reasons, "reject_reason")
            )
        yield dg.MaterializeResult(asset_key=raw_key(table), metadata={**metadata[table], **extra})
    age = freshness.source_age(settings.raw_dir, freshness.SURVEYS, settings.max_raw_age_hours)
    yield raw_check_result(raw_key("survey_responses"), age)
    note_stale_run(context, [age])
    yield dg.AssetCheckResult(
        check_name=SURVEY_FILES_CHECK,
        asset_key=raw_key("survey_files"),
        passed=not failing,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "failing_files": dg.MetadataValue.md(
                markdown_table(["file", "error"], sorted(failing.items())) if failing else "none"
            )
        },
    )


def _survey_run_metadata(report: surveys.IngestReport, folder: Path) -> dict[str, Any]:
    return {
        "files_seen": dg.MetadataValue.int(report.files_seen),
        "files_ingested": dg.MetadataValue.json(report.ingested),
        "files_replaced": dg.MetadataValue.json(report.replaced),
        "files_unchanged": dg.MetadataValue.int(len(report.unchanged)),
        "files_failed": dg.MetadataValue.json(report.failed),
        "rows_accepted_this_run": dg.MetadataValue.int(report.rows_accepted),
        "rows_rejected_this_run": dg.MetadataValue.int(report.rows_rejected),
        "surveys_dir": dg.MetadataValue.path(str(folder)),
    }
