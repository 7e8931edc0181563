"""The code location: ``dagster dev`` / ``dagster job execute -m orchestration.definitions``.

Importing this module builds the definitions (and runs ``dbt parse`` if the manifest is missing
or stale); tests call ``orchestration.defs.build_definitions`` instead, after pointing the
environment at their temporary folders.
"""

from orchestration.defs import build_definitions

defs = build_definitions()
