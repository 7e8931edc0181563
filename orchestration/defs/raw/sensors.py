"""``new_survey_files``: a new or changed file in CW_RAW_DIR/surveys starts a survey run.

The cursor is a JSON map ``file name → "<mtime_ns>:<size>"`` of the survey files seen at the
last tick. A file whose entry is new or different is "new"; one run is requested for all of
them, for the survey asset and everything downstream of it (staging, the NPS marts, ...). The
run key is derived from the files' fingerprints, so the same change never starts two runs. A
deleted file only updates the cursor: raw survey data is append-only
(customer_warehouse.ingestion.surveys).

mtime + size rather than a content hash keeps a tick cheap on a large folder; a touched but
unchanged file costs one run that ingests nothing (ingestion is idempotent by content hash).
"""

import hashlib
import json

import dagster as dg

from customer_warehouse.config import ConfigError, load_settings
from customer_warehouse.ingestion import survey_files_in
from orchestration.defs.raw.assets import SURVEY_KEYS

SURVEY_SENSOR_INTERVAL_SECONDS = 60

survey_refresh = dg.define_asset_job(
    name="survey_refresh",
    selection=dg.AssetSelection.assets(*SURVEY_KEYS).downstream(),
    description="Ingest the survey files and rebuild everything that depends on them.",
    tags={"warehouse/refresh": "surveys"},
)


def fingerprint_surveys() -> dict[str, str]:
    """``{file name: "<mtime_ns>:<size>"}`` of the survey files the ingestion would read."""
    settings = load_settings()
    return {
        path.name: f"{stat.st_mtime_ns}:{stat.st_size}"
        for path in survey_files_in(settings.raw_dir / "surveys")
        for stat in [path.stat()]
    }


@dg.sensor(
    name="new_survey_files",
    job=survey_refresh,
    minimum_interval_seconds=SURVEY_SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Ingest new or changed survey files in CW_RAW_DIR/surveys and refresh what "
    "depends on them.",
)
def new_survey_files(context: dg.SensorEvaluationContext):
    try:
        current = fingerprint_surveys()
    except ConfigError as exc:
        return dg.SkipReason(f"Survey folder not readable: {exc}")
    previous: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    changed = sorted(name for name, print_ in current.items() if previous.get(name) != print_)
    context.update_cursor(json.dumps(current, sort_keys=True))
    if not changed:
        return dg.SkipReason("No new or changed survey files.")
    run_key = hashlib.sha256(
        json.dumps({name: current[name] for name in changed}, sort_keys=True).encode()
    ).hexdigest()[:16]
    context.log.info(f"New or changed survey files: {', '.join(changed)}")
    return dg.RunRequest(
        run_key=f"surveys-{run_key}",
        tags={"survey_files": ",".join(changed)[:200]},
    )
