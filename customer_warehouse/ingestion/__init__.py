"""Ingestion: the raw exports and the survey files of CW_RAW_DIR become the ``raw`` schema.

The public API, re-exported from the modules that hold it:

* ``contract``: the sources and their columns (``SOURCES``), ``RawDataError``; reads and
  writes nothing;
* ``files``: finding a source's files (one export or deliveries over time) and their hash;
* ``deliveries``: the bookkeeping of loaded files, ``raw.deliveries`` and ``raw.load_manifest``;
* ``encoding``, ``structure``, ``reading``: a file's bytes, structure checks, reading one file;
* ``raw_tables``: ``load_raw`` (everything new or changed into ``raw.<source>``, in one
  transaction), ``run`` and the command line (``python -m customer_warehouse.ingestion``);
* ``surveys`` and ``survey_records``: ``ingest_surveys`` (``raw.survey_responses``,
  ``raw.survey_rejects``, ``raw.survey_files``) and the validation of one survey file.
"""

from customer_warehouse.ingestion.contract import (
    DELIVERIES_TABLE,
    HEAD_BYTES,
    LOAD_COLUMNS,
    LOADED,
    RAW_SCHEMA,
    SOURCES,
    SOURCES_BY_NAME,
    LoadedSource,
    RawDataError,
    SourceSpec,
)
from customer_warehouse.ingestion.deliveries import status_counts
from customer_warehouse.ingestion.files import (
    DeliveryFile,
    file_sha256,
    find_deliveries,
    find_source_file,
)
from customer_warehouse.ingestion.raw_tables import ensure_survey_tables, load_raw, main, run
from customer_warehouse.ingestion.structure import check_columns, csv_header
from customer_warehouse.ingestion.survey_records import (
    KNOWN_NEED_TAGS,
    REJECT_REASONS,
    SurveyFileError,
)
from customer_warehouse.ingestion.surveys import (
    SURVEY_SUFFIXES,
    IngestReport,
    create_survey_tables,
    failing_files,
    ingest_surveys,
    list_survey_files,
    survey_files_in,
)

__all__ = [
    "DELIVERIES_TABLE",
    "HEAD_BYTES",
    "KNOWN_NEED_TAGS",
    "LOADED",
    "LOAD_COLUMNS",
    "RAW_SCHEMA",
    "REJECT_REASONS",
    "SOURCES",
    "SOURCES_BY_NAME",
    "SURVEY_SUFFIXES",
    "DeliveryFile",
    "IngestReport",
    "LoadedSource",
    "RawDataError",
    "SourceSpec",
    "SurveyFileError",
    "check_columns",
    "create_survey_tables",
    "csv_header",
    "ensure_survey_tables",
    "failing_files",
    "file_sha256",
    "find_deliveries",
    "find_source_file",
    "ingest_surveys",
    "list_survey_files",
    "load_raw",
    "main",
    "run",
    "status_counts",
    "survey_files_in",
]
