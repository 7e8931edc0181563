"""Every rule value lives in one seed or config file (docs/architecture.md, "Where each rule
lives"). The rules that once had copies in code are checked here: a list of channels, a list
of personal columns or a set of churn thresholds written out again in Python or SQL fails this
test, naming the file and line, so the copy is read from its home instead.

Homes: the channels are the var `channels` of dbt_project.yml (seeds/channel_aliases.csv maps
raw spellings onto them), the personal columns seeds/personal_columns.csv, the churn
thresholds seeds/tiers/churn_risk_bands.csv.

A literal counts as a copy when it consists of the rule's values only (two or more of them):
the raw file contract, which names personal columns among others, is not a copy of the
personal-column rule; a list that is nothing but channels is a copy of the channel vocabulary.
"""

from __future__ import annotations

import ast
import csv
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .conftest import PROJECT_DIR

SEEDS = PROJECT_DIR / "seeds"
PYTHON_DIRS = ("customer_warehouse", "orchestration")
SQL_DIRS = ("models", "macros")


def _seed_column(path: Path, column: str) -> set[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return {row[column] for row in csv.DictReader(handle)}


CHANNELS = set(yaml.safe_load((PROJECT_DIR / "dbt_project.yml").read_text())["vars"]["channels"])
PERSONAL_COLUMNS = _seed_column(SEEDS / "personal_columns.csv", "column_name")
CHURN_BANDS = _seed_column(SEEDS / "tiers" / "churn_risk_bands.csv", "band")
CHURN_THRESHOLDS = {
    float(value) for value in _seed_column(SEEDS / "tiers" / "churn_risk_bands.csv", "min_p_alive")
} - {0.0}


def _python_files() -> list[Path]:
    return sorted(p for d in PYTHON_DIRS for p in (PROJECT_DIR / d).rglob("*.py"))


def _sql_files() -> list[Path]:
    return sorted(p for d in SQL_DIRS for p in (PROJECT_DIR / d).rglob("*.sql"))


def _python_literals(path: Path) -> Iterator[tuple[int, list[object]]]:
    """(line, constant values) of every list, tuple, set and dict literal (keys and values)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [*(key for key in node.keys if key is not None), *node.values]
        else:
            continue
        values = [item.value for item in items if isinstance(item, ast.Constant)]
        if len(values) == len(items):  # a literal of constants only
            yield node.lineno, values


# A Jinja list `['a', 'b']` or an SQL list `in ('a', 'b')`.
_SQL_LIST = re.compile(r"\[([^\[\]]*)\]|\bin\s*\(([^()]*)\)", re.IGNORECASE)
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")


def _sql_literals(path: Path) -> Iterator[tuple[int, list[object]]]:
    text = path.read_text(encoding="utf-8")
    for match in _SQL_LIST.finditer(text):
        body = match.group(1) if match.group(1) is not None else match.group(2)
        values = [a or b for a, b in _QUOTED.findall(body)]
        if values and _QUOTED.sub("", body).replace(",", "").strip() == "":
            yield text.count("\n", 0, match.start()) + 1, values


def _literals() -> Iterator[tuple[str, int, list[object]]]:
    for path in _python_files():
        for line, values in _python_literals(path):
            yield str(path.relative_to(PROJECT_DIR)), line, values
    for path in _sql_files():
        for line, values in _sql_literals(path):
            yield str(path.relative_to(PROJECT_DIR)), line, values


def _copies_of(vocabulary: set[str], allowed_extra: set[str] = frozenset()) -> list[str]:
    copies = []
    for where, line, values in _literals():
        strings = [v for v in values if isinstance(v, str)]
        if len(strings) != len(values):
            continue
        named = {v for v in strings if v in vocabulary}
        if len(named) >= 2 and set(strings) <= vocabulary | allowed_extra:
            copies.append(f"{where}:{line} {sorted(set(strings))}")
    return copies


def test_the_vocabularies_are_read_from_their_homes():
    # The test reads the real homes: an empty vocabulary would make every check below pass.
    assert {"online_shop", "store"} <= CHANNELS
    assert {"email", "phone", "full_name"} <= PERSONAL_COLUMNS
    assert {"low", "medium", "high"} <= CHURN_BANDS and len(CHURN_THRESHOLDS) >= 3


def test_channels_are_listed_only_in_the_channels_var():
    copies = _copies_of(CHANNELS, allowed_extra={"other", "unknown"})
    assert not copies, (
        "the channel vocabulary is written out again; read the var `channels` of "
        "dbt_project.yml (SQL: var('channels')):\n" + "\n".join(copies)
    )


def test_the_channel_aliases_map_onto_the_known_channels_only():
    targets = _seed_column(SEEDS / "channel_aliases.csv", "channel")
    assert targets <= CHANNELS, f"seeds/channel_aliases.csv maps onto {targets - CHANNELS}"
    assert targets >= CHANNELS, f"no alias for {CHANNELS - targets}"


def test_personal_columns_are_listed_only_in_seeds_personal_columns():
    copies = _copies_of(PERSONAL_COLUMNS)
    assert not copies, (
        "a list of personal columns is written out again; read seeds/personal_columns.csv "
        "(customer_warehouse.privacy):\n" + "\n".join(copies)
    )


def test_churn_thresholds_are_only_in_seeds_churn_risk_bands():
    copies = []
    for where, line, values in _literals():
        bands = {v for v in values if isinstance(v, str) and v in CHURN_BANDS}
        numbers = {
            float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)
        }
        if len(bands) >= 2 and numbers & CHURN_THRESHOLDS:
            copies.append(f"{where}:{line} {values}")
    assert not copies, (
        "churn thresholds are written out again; read seeds/tiers/churn_risk_bands.csv:\n"
        + "\n".join(copies)
    )


@pytest.mark.parametrize(
    ("literal", "vocabulary", "found"),
    [
        ("x = ('online_shop', 'app', 'store')", CHANNELS, True),
        ("x = ['order_id', 'email', 'phone']", PERSONAL_COLUMNS, False),  # a contract, not a copy
        ("x = {'email', 'phone'}", PERSONAL_COLUMNS, True),
    ],
)
def test_the_copy_finder_finds_copies(tmp_path, literal, vocabulary, found):
    path = tmp_path / "module.py"
    path.write_text(literal + "\n")
    groups = [values for _line, values in _python_literals(path)]
    hits = [
        values
        for values in groups
        if len({v for v in values if v in vocabulary}) >= 2 and set(values) <= vocabulary
    ]
    assert bool(hits) is found


def test_the_sql_copy_finder_reads_jinja_and_in_lists(tmp_path):
    path = tmp_path / "model.sql"
    path.write_text(
        "{%- set cs = ['online_shop', 'app'] %}\nselect 1 where channel in ('store', 'phone')\n"
    )
    assert [line for line, _values in _sql_literals(path)] == [1, 2]
