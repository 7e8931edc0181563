"""The serving copy: what BI tools and Parquet readers may read, published atomically.

Reads the warehouse (one DuckDB connection, read-only is enough) and writes ``serving_dir``
(``CW_SERVING_DIR``, default ``serving/`` beside the warehouse file, i.e. ``data/serving/``)::

    serving_dir/
      current -> versions/<id>      symlink, switched atomically (os.replace of a new symlink)
      CURRENT                       "<id>\\n", written temp + rename (for tools without symlinks)
      .publish.lock                 held (flock) while a publish runs; released if it dies
      versions/<id>/
        serving.duckdb              every published table as <schema>.<table>, plus the manifest
                                    as tables manifest.version and manifest.tables
        parquet/<schema>/<table>.parquet
        manifest.json               as-of date, build time, git revision, per table: rows,
                                    checksum, columns, columns left out

**What is published** is decided in one place, ``serving_tables.csv`` beside this package
(``customer_warehouse/serving_tables.csv``, :func:`load_rules`): a row per schema (``*``), table
or column with ``publish`` yes/no and why. The most specific row wins; anything no row names is
not published; ``raw``, ``staging`` and ``intermediate`` can never be published (a ``yes`` for
them is an error). Which columns of a published table leave, and as what, is decided by
:func:`published_columns` (the hook for column transforms such as keyed pseudonyms); a column
named like personal data (:data:`PERSONAL_COLUMNS`) stops the publish.

**Publishing** (:func:`publish`) writes ``versions/<id>.partial/`` from scratch (ATTACH + CREATE
TABLE AS, COPY ... TO parquet, the manifest), fsyncs it, renames it to ``versions/<id>/`` and
then switches ``current`` and ``CURRENT``. A reader that already opened a version keeps reading
it, also after it is pruned (POSIX keeps an open file alive). Only the newest ``keep`` versions
are kept, never removing the current one; ``.partial`` folders of a killed publish are removed
by the next one (a version killed after its rename but before the switch is complete, never
current, and pruned in its turn). A failure before the switch leaves ``current`` where it was.

**Version ids** sort by time and are unique: ``YYYYMMDDTHHMMSS.ffffffZ-<6 hex>`` (UTC), and a
new id is always later than every existing one (the clock is bumped if needed).

**Checksum** of a table: ``sum(hash(row))`` over the published table, modulo 2**64, as 16 hex
digits. Order-independent (a sum), duplicate rows count (unlike xor), identical for identical
content with the same DuckDB version (the manifest records it; DuckDB's ``hash`` is not
promised stable across versions). Row count and checksum are the table's fingerprint. It is
computed on ``serving.duckdb``; the Parquet file has the same rows (Parquet may widen a type,
e.g. HUGEINT to DOUBLE, so recompute checksums on the DuckDB file).

The package (each module's docstring says what it reads and writes):

* ``rules.py``: the publish rules: ``serving_tables.csv`` (:func:`load_rules`),
  :func:`published_columns`, the tables to publish (:func:`plan_tables`), pseudonyms
  (:func:`fill_pseudonyms`), :class:`ServingError`.
* ``versions.py``: the versions on disk: version ids, :func:`list_versions`,
  :func:`current_version`, :func:`read_manifest`, fsync, the atomic :func:`switch_to`,
  :func:`prune`, :func:`publish_lock`.
* ``publishing.py``: :func:`git_revision`, checksums (:func:`table_checksum`), writing the
  tables and the manifest, :func:`publish`.
"""

from customer_warehouse.serving.publishing import (
    CHECKSUM_METHOD,
    CHECKSUM_SQL,
    MANIFEST_FORMAT,
    PARQUET_DIR,
    git_revision,
    publish,
    table_checksum,
)
from customer_warehouse.serving.rules import (
    MANIFEST_SCHEMA,
    NEVER_PUBLISHED,
    PERSONAL_COLUMNS,
    PSEUDONYM,
    PSEUDONYM_TABLE,
    RULES_FILE,
    PlannedTable,
    PublishRules,
    Rule,
    ServingError,
    fill_pseudonyms,
    load_rules,
    plan_tables,
    published_columns,
    quote_identifier,
    quote_table,
    sql_string,
)
from customer_warehouse.serving.versions import (
    CURRENT_FILE,
    CURRENT_LINK,
    DEFAULT_KEEP,
    DUCKDB_FILE,
    LOCK_FILE,
    LOCK_TIMEOUT_SECONDS,
    MANIFEST_FILE,
    PARTIAL_SUFFIX,
    VERSION_RE,
    VERSIONS_DIR,
    TableManifest,
    Version,
    current_version,
    list_versions,
    new_version_id,
    prune,
    publish_lock,
    read_manifest,
    switch_to,
)

__all__ = [
    "CHECKSUM_METHOD",
    "CHECKSUM_SQL",
    "CURRENT_FILE",
    "CURRENT_LINK",
    "DEFAULT_KEEP",
    "DUCKDB_FILE",
    "LOCK_FILE",
    "LOCK_TIMEOUT_SECONDS",
    "MANIFEST_FILE",
    "MANIFEST_FORMAT",
    "MANIFEST_SCHEMA",
    "NEVER_PUBLISHED",
    "PARQUET_DIR",
    "PARTIAL_SUFFIX",
    "PERSONAL_COLUMNS",
    "PSEUDONYM",
    "PSEUDONYM_TABLE",
    "RULES_FILE",
    "VERSION_RE",
    "VERSIONS_DIR",
    "PlannedTable",
    "PublishRules",
    "Rule",
    "ServingError",
    "TableManifest",
    "Version",
    "current_version",
    "fill_pseudonyms",
    "git_revision",
    "list_versions",
    "load_rules",
    "new_version_id",
    "plan_tables",
    "prune",
    "publish",
    "publish_lock",
    "published_columns",
    "quote_identifier",
    "quote_table",
    "read_manifest",
    "sql_string",
    "switch_to",
    "table_checksum",
]
