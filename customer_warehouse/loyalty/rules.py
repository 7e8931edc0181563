"""The numbers of the loyalty program, read from the seeds ``seeds.loyalty_rules`` and
``seeds.loyalty_level_multipliers`` and checked; the behaviour lives in the package docstring.

Reads the two seed tables; writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import duckdb

from customer_warehouse.loyalty.schema import LEVELS_TABLE, RULES_TABLE
from customer_warehouse.warehouse import require_tables

_DECIMAL_RULES = ("base_points_per_currency_unit", "birthday_month_multiplier", "point_value")
_WHOLE_RULES = ("points_expiry_months", "pending_days", "expiring_soon_days")
_REQUIRED_RULES = (*_DECIMAL_RULES[:2], *_WHOLE_RULES, _DECIMAL_RULES[2])
_FIX = "run `dbt seed` again"


@dataclass(frozen=True)
class LoyaltyRules:
    """The numbers of the program (from the seeds); behaviour is in the package docstring."""

    base_points_per_currency_unit: Decimal
    birthday_month_multiplier: Decimal
    points_expiry_months: int  # 0 = points never expire
    level_multipliers: Mapping[str, Decimal]  # keys lower-case
    pending_days: int = 0
    expiring_soon_days: int = 30
    point_value: Decimal = Decimal(0)  # money per point, reporting currency

    def __post_init__(self) -> None:
        for name in _DECIMAL_RULES:
            object.__setattr__(self, name, to_decimal(getattr(self, name)))
        object.__setattr__(
            self,
            "level_multipliers",
            {str(k).strip().lower(): to_decimal(v) for k, v in self.level_multipliers.items()},
        )
        problems = self._problems()
        if problems:
            raise ValueError(
                "Invalid loyalty rules: " + "; ".join(problems) + ". Fix seeds/loyalty_rules.csv "
                f"or seeds/loyalty_level_multipliers.csv and {_FIX}."
            )
        for name in _WHOLE_RULES:
            object.__setattr__(self, name, int(getattr(self, name)))

    def _problems(self) -> list[str]:
        problems = [f"{name} is negative" for name in _DECIMAL_RULES if getattr(self, name) < 0]
        for name in _WHOLE_RULES:
            value = getattr(self, name)
            if int(value) != value or value < 0:
                problems.append(f"{name} must be a whole number >= 0")
        if (
            not problems
            and self.points_expiry_months
            and (self.pending_days >= 28 * self.points_expiry_months)
        ):
            problems.append(
                f"pending_days ({self.pending_days}) must be shorter than the shortest expiry "
                f"({self.points_expiry_months} months = {28 * self.points_expiry_months} days)"
            )
        return problems + [
            f"multiplier of level {k!r} is negative"
            for k, v in self.level_multipliers.items()
            if v < 0
        ]


def load_rules(con: duckdb.DuckDBPyConnection) -> LoyaltyRules:
    """The rules from the seed tables ``seeds.loyalty_rules`` and its level multipliers.

    Read at run time, not hard-coded, so a rule change is a reviewed seed change.
    """
    require_tables(con, [RULES_TABLE, LEVELS_TABLE], "run `dbt seed` first")
    values = _rule_values(con)
    missing = [rule for rule in _REQUIRED_RULES if rule not in values]
    if missing:
        raise ValueError(
            f"{RULES_TABLE} lacks the rule(s) {', '.join(missing)}. Add them to "
            f"seeds/loyalty_rules.csv (columns rule,value,description) and {_FIX}."
        )
    whole = {
        name: int(values[name]) if values[name] == int(values[name]) else -1  # -1 → clear error
        for name in _WHOLE_RULES
    }
    return LoyaltyRules(
        base_points_per_currency_unit=values["base_points_per_currency_unit"],
        birthday_month_multiplier=values["birthday_month_multiplier"],
        level_multipliers=_level_multipliers(con),
        point_value=values["point_value"],
        **whole,
    )


def _rule_values(con: duckdb.DuckDBPyConnection) -> dict[str, Decimal]:
    values: dict[str, Decimal] = {}
    for rule, value in con.execute(f"select rule, value from {RULES_TABLE}").fetchall():
        key = str(rule).strip().lower()
        if key in values:
            raise ValueError(
                f"Rule {key!r} appears twice in {RULES_TABLE}. Keep one row per rule in "
                f"seeds/loyalty_rules.csv and {_FIX}."
            )
        try:
            values[key] = to_decimal(value)
        except ValueError as exc:
            raise ValueError(
                f"Rule {key!r} in {RULES_TABLE} has the value {value!r}, which is not a number. "
                f"Fix seeds/loyalty_rules.csv and {_FIX}."
            ) from exc
    return values


def _level_multipliers(con: duckdb.DuckDBPyConnection) -> dict[str, Decimal]:
    levels: dict[str, Decimal] = {}
    for level, multiplier in con.execute(
        f"select membership_level, multiplier from {LEVELS_TABLE}"
    ).fetchall():
        key = str(level).strip().lower()
        if key in levels:
            raise ValueError(
                f"Membership level {key!r} appears twice in {LEVELS_TABLE}. Keep one row per "
                f"level in seeds/loyalty_level_multipliers.csv and {_FIX}."
            )
        levels[key] = to_decimal(multiplier)
    return levels


def to_decimal(value: Any) -> Decimal:
    """Exact decimal of a number; floats go through their shortest repr (0.29 → 0.29)."""
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, float):
        result = Decimal(repr(value))
    else:
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation as exc:
            raise ValueError(f"{value!r} is not a number") from exc
    if not result.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return result
