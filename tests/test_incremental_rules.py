"""An incremental model rebuilds when a rule it is computed from changes (docs/architecture.md,
"Incremental models"): its SQL, an upstream seed, a var, or one of the project's macros.

The model SQL and seed cases run in tests/test_incremental.py's daily scenario; here: every var
the models read is in the fingerprint, and editing a macro (in a copy of the project) turns the
next daily run of an incremental model from a filtered run into a rebuild.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import duckdb
import pytest
import yaml

from customer_warehouse import ingestion

from .conftest import FIXTURES, PROJECT_DIR, dbt_env, run_dbt
from .project_copy import project_copy

STATE_MACROS = PROJECT_DIR / "macros" / "incremental" / "incremental_state.sql"
#: Vars that say how a run works, not what the rows are: the as-of date (saved in the state on
#: its own), the lookback of a filtered run, and the schema prefix of scratch relations.
RUN_VARS = {"as_of_date", "incremental_lookback_days", "scratch_schema_prefix"}
#: A staging model whose every row comes from one raw file: small, and incremental on DuckDB.
MODEL = "base_shop__products"


def _fingerprinted_vars() -> set[str]:
    body = STATE_MACROS.read_text(encoding="utf-8").split("macro cw_rules_fingerprint()")[1]
    names = body.split("{%- for name in [")[1].split("] -%}")[0]
    return set(re.findall(r"'([a-z_]+)'", names))


def test_every_var_the_models_read_is_in_the_rules_fingerprint():
    used = set()
    for folder in ("models", "macros"):
        for path in (PROJECT_DIR / folder).rglob("*.sql"):
            used |= set(re.findall(r"var\(\s*['\"]([a-z_]+)['\"]", path.read_text("utf-8")))
    declared = set(yaml.safe_load((PROJECT_DIR / "dbt_project.yml").read_text())["vars"])
    assert used - RUN_VARS, "no rule var found: the scan is broken"
    assert used - RUN_VARS <= _fingerprinted_vars(), "add the var to cw_rules_fingerprint()"
    assert _fingerprinted_vars() <= declared


def _run(project: Path, env: dict[str, str]) -> str:
    """A daily run of MODEL (and what it is built from); the line saying how it was built."""
    proc = run_dbt(
        ["run", "--select", f"+{MODEL}", "--project-dir", str(project)],
        {**env, "DBT_PROFILES_DIR": str(project)},
        project=project,
    )
    found = re.search(rf'"{MODEL}": incremental run, (\w+ \([^)]*\))', proc.stdout)
    return found.group(1) if found else "not an incremental run"


@pytest.mark.slow
def test_editing_a_macro_rebuilds_the_incremental_models_at_the_next_run(tmp_path):
    project = project_copy(tmp_path)
    raw = tmp_path / "raw"
    shutil.copytree(FIXTURES / "quarantine", raw)
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        ingestion.load_raw(con, raw, log=lambda _line: None, encodings={})
        ingestion.ensure_survey_tables(con)
    env = dbt_env(warehouse, tmp_path, raw)

    assert _run(project, env) == "not an incremental run"  # the first build
    assert _run(project, env) == "filter (changes since the last run)"

    # A change inside a macro the model does not call by name: cw_state_prefix() is reached
    # only through the incremental state macros its hooks call.
    macro_file = project / "macros" / "incremental" / "incremental_state.sql"
    text = macro_file.read_text(encoding="utf-8")
    edited = text.replace(
        "{% macro cw_state_prefix() -%}", "{% macro cw_state_prefix() -%}{#- edited -#}", 1
    )
    assert edited != text
    macro_file.write_text(edited, encoding="utf-8")
    assert _run(project, env) == "rebuild (rules changed)"
    assert _run(project, env) == "filter (changes since the last run)"
