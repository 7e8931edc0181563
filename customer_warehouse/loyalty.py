"""Loyalty points: a ledger of point movements and the balances derived from it.

Why Python and not SQL: points expire per earn lot and are consumed oldest-first (FIFO), and a
redemption is accepted or refused depending on the balance at that very moment. That is a
sequential state machine per customer; it is written once here as a pure function
(:func:`compute_ledger`) over one customer's events, unit-tested rule by rule, and
:func:`build_loyalty_tables` feeds it customers in batches so memory stays bounded.

Rules (numbers come from the dbt seeds ``seeds/loyalty_rules.csv`` and
``seeds/loyalty_level_multipliers.csv``; the behaviour below lives only here):

* **Earn.** Every order with status completed, cancelled or refunded earns at ``ordered_at``
  ``floor(amount × base_points_per_currency_unit × level multiplier × birthday multiplier)``
  points, computed in exact decimal arithmetic. The level multiplier is that of
  ``membership_level_at_order`` (an unknown or missing level earns with multiplier 1 and says so
  in ``note``). The birthday multiplier applies when the UTC month of ``ordered_at`` is the
  customer's birth month; it is folded into the single ``earn`` row and flagged by
  ``is_birthday_month`` (one row, one lot, one clawback per order). An order earning 0 points
  produces no movement.
* **Lots and expiry.** Each earn is a lot that expires ``points_expiry_months`` calendar months
  after ``ordered_at`` (same time of day; day clamped to the month's end; 0 = never). What is
  left of a lot at that moment leaves in one ``expire`` row dated at the expiry moment.
* **FIFO.** Redemptions and clawbacks consume the oldest lots first.
* **Redeem.** A redemption (``staging.stg_shop__redemptions``) needing more points than the
  available, non-expired balance at that moment is refused with ``insufficient_balance`` and
  the balance at that moment (never clamped). Also refused: ``invalid_points`` (empty, zero,
  negative, fractional) and ``duplicate_redemption_id`` (second row with the same id).
* **Clawback.** A cancelled or refunded order gives back, at ``status_changed_at``, the points
  it earned: first what is left of its own lot, then — for the part of that lot already
  spent — points from the other lots, oldest first. Points of that lot that already expired are
  not taken again (the customer lost them already). What cannot be taken because the balance is
  exhausted is recorded in ``points_shortfall`` and ``note``; the balance never goes negative.
  A missing ``status_changed_at`` (or one before ``ordered_at``) dates the clawback at
  ``ordered_at``, with a note.
* **Same timestamp order:** expire → earn → redeem → clawback; within a type by order_id /
  redemption_id (expiries by lot age). So points expiring at instant t cannot be spent at t,
  points earned at t can, and a redemption at t is judged before a clawback at t.
* **As-of.** Only orders with ``ordered_at::date <= as_of_date`` and movements up to the end of
  that day (``occurred_at < as_of_date + 1 day``) exist: a cancellation after the as-of date is
  not known yet, nor is an expiry.
* **Stable ids.** ``movement_id`` is ``earn:<order_id>``, ``expire:<order_id>``,
  ``clawback:<order_id>`` or ``redeem:<redemption_id>``; rows are numbered per customer in
  processing order (``movement_seq``). Recomputing gives the same ledger.

All timestamps are UTC wall-clock times without time zone (DuckDB TIMESTAMP); aware datetimes
are converted to UTC.
"""

from __future__ import annotations

import calendar
import contextlib
import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa

ORDERS_TABLE = "intermediate.int_orders_joined_to_membership_levels"
BIRTH_MONTHS_TABLE = "intermediate.int_customer_birth_months"
REDEMPTIONS_TABLE = "staging.stg_shop__redemptions"
AS_OF_TABLE = "intermediate.int_as_of_date"
RULES_TABLE = "seeds.loyalty_rules"
LEVELS_TABLE = "seeds.loyalty_level_multipliers"

LEDGER_TABLE = "marts.loyalty_points_ledger"
BALANCES_TABLE = "marts.loyalty_balances"
REJECTS_TABLE = "marts.loyalty_redemption_rejects"

EARNING_STATUSES = frozenset({"completed", "cancelled", "refunded"})
CLAWBACK_STATUSES = frozenset({"cancelled", "refunded"})

#: Order of movements that share a timestamp (documented in the module docstring).
MOVEMENT_RANK: Mapping[str, int] = {"expire": 0, "earn": 1, "redeem": 2, "clawback": 3}

REDEMPTION_REJECT_REASONS = ("invalid_points", "duplicate_redemption_id", "insufficient_balance")

EXPIRING_SOON_DAYS = 30


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoyaltyRules:
    """The numbers of the program (from the seeds); behaviour is in :func:`compute_ledger`."""

    base_points_per_currency_unit: Decimal
    birthday_month_multiplier: Decimal
    points_expiry_months: int  # 0 = points never expire
    level_multipliers: Mapping[str, Decimal]  # keys lower-case

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "base_points_per_currency_unit", _decimal(self.base_points_per_currency_unit)
        )
        object.__setattr__(
            self, "birthday_month_multiplier", _decimal(self.birthday_month_multiplier)
        )
        object.__setattr__(
            self,
            "level_multipliers",
            {str(k).strip().lower(): _decimal(v) for k, v in self.level_multipliers.items()},
        )
        problems = []
        if self.base_points_per_currency_unit < 0:
            problems.append("base_points_per_currency_unit is negative")
        if self.birthday_month_multiplier < 0:
            problems.append("birthday_month_multiplier is negative")
        if int(self.points_expiry_months) != self.points_expiry_months or (
            self.points_expiry_months < 0
        ):
            problems.append("points_expiry_months must be a whole number >= 0")
        problems += [
            f"multiplier of level {k!r} is negative"
            for k, v in self.level_multipliers.items()
            if v < 0
        ]
        if problems:
            raise ValueError(
                "Invalid loyalty rules: " + "; ".join(problems) + ". Fix seeds/loyalty_rules.csv "
                "or seeds/loyalty_level_multipliers.csv and run `dbt seed` again."
            )
        object.__setattr__(self, "points_expiry_months", int(self.points_expiry_months))


_REQUIRED_RULES = (
    "base_points_per_currency_unit",
    "birthday_month_multiplier",
    "points_expiry_months",
)


def load_rules(con: duckdb.DuckDBPyConnection) -> LoyaltyRules:
    """The rules from the seed tables ``seeds.loyalty_rules`` and its level multipliers.

    Read at run time, not hard-coded, so a rule change is a reviewed seed change.
    """
    _require_tables(con, [RULES_TABLE, LEVELS_TABLE], "run `dbt seed` first")
    values: dict[str, Decimal] = {}
    for rule, value in con.execute(f"select rule, value from {RULES_TABLE}").fetchall():
        key = str(rule).strip().lower()
        if key in values:
            raise ValueError(
                f"Rule {key!r} appears twice in {RULES_TABLE}. Keep one row per rule in "
                "seeds/loyalty_rules.csv and run `dbt seed` again."
            )
        try:
            values[key] = _decimal(value)
        except ValueError as exc:
            raise ValueError(
                f"Rule {key!r} in {RULES_TABLE} has the value {value!r}, which is not a number. "
                "Fix seeds/loyalty_rules.csv and run `dbt seed` again."
            ) from exc
    missing = [rule for rule in _REQUIRED_RULES if rule not in values]
    if missing:
        raise ValueError(
            f"{RULES_TABLE} lacks the rule(s) {', '.join(missing)}. Add them to "
            "seeds/loyalty_rules.csv (columns rule,value,description) and run `dbt seed` again."
        )
    levels: dict[str, Decimal] = {}
    for level, multiplier in con.execute(
        f"select membership_level, multiplier from {LEVELS_TABLE}"
    ).fetchall():
        key = str(level).strip().lower()
        if key in levels:
            raise ValueError(
                f"Membership level {key!r} appears twice in {LEVELS_TABLE}. Keep one row per "
                "level in seeds/loyalty_level_multipliers.csv and run `dbt seed` again."
            )
        levels[key] = _decimal(multiplier)
    expiry = values["points_expiry_months"]
    return LoyaltyRules(
        base_points_per_currency_unit=values["base_points_per_currency_unit"],
        birthday_month_multiplier=values["birthday_month_multiplier"],
        points_expiry_months=int(expiry) if expiry == int(expiry) else -1,  # -1 → clear error
        level_multipliers=levels,
    )


# --------------------------------------------------------------------------------------------
# Events in, ledger out
# --------------------------------------------------------------------------------------------


# Events and output rows are NamedTuples: immutable, and cheap to create by the million.


class Order(NamedTuple):
    """One order as read from ``intermediate.int_orders_joined_to_membership_levels``."""

    order_id: str
    ordered_at: datetime
    amount: Decimal | float | int
    status: str
    membership_level_at_order: str | None
    status_changed_at: datetime | None = None


class Redemption(NamedTuple):
    """One redemption as read from ``staging.stg_shop__redemptions``."""

    redemption_id: str
    redeemed_at: datetime
    points: int | None


@dataclass(frozen=True)
class CustomerEvents:
    """Everything :func:`compute_ledger` needs about one customer (order of lists irrelevant)."""

    customer_id: str
    orders: Sequence[Order] = ()
    redemptions: Sequence[Redemption] = ()
    birth_month: int | None = None


class LedgerRow(NamedTuple):
    """One movement of points; ``points`` is signed (earn > 0, the others <= 0)."""

    movement_id: str
    customer_id: str
    movement_seq: int
    occurred_at: datetime
    movement_type: str  # earn | redeem | clawback | expire
    points: int
    order_id: str | None
    redemption_id: str | None
    membership_level_at_order: str | None
    is_birthday_month: bool | None  # earn rows only
    lot_expires_at: datetime | None  # earn rows only; None = never expires
    points_shortfall: int | None  # clawback rows only: points that could not be taken back
    balance_after: int
    note: str | None


class RedemptionReject(NamedTuple):
    redemption_id: str
    customer_id: str
    redeemed_at: datetime
    points: int | None
    reject_reason: str
    available_balance: int


class BalanceRow(NamedTuple):
    customer_id: str
    points_balance: int
    points_earned_total: int
    points_redeemed_total: int  # positive numbers: amounts that left the balance
    points_expired_total: int
    points_clawed_back_total: int
    points_expiring_next_30d: int
    next_expiry_date: date | None
    last_movement_at: datetime | None
    as_of_date: date


class LedgerResult(NamedTuple):
    ledger: list[LedgerRow]
    rejected_redemptions: list[RedemptionReject]
    balance: BalanceRow


@dataclass(slots=True)
class _Lot:
    order_id: str
    earned_at: datetime
    expires_at: datetime | None
    points: int
    level: str | None
    remaining: int
    expired: int = 0


def compute_ledger(events: CustomerEvents, rules: LoyaltyRules, as_of_date: date) -> LedgerResult:
    """The ledger, refused redemptions and balance of one customer as of the end of ``as_of_date``.

    Pure: no I/O, no clock; the same input gives the same output whatever the order of
    ``events.orders`` / ``events.redemptions``. Raises ``ValueError`` on input that breaks the
    orders contract (unknown status, missing/negative amount, repeated order_id), because those
    are caught upstream by dbt tests and must not be guessed here.
    """
    customer_id = events.customer_id
    as_of_end = datetime.combine(as_of_date + timedelta(days=1), time())
    birth_month = events.birth_month

    # (occurred_at, rank, reference, kind, payload)
    queue: list[tuple[datetime, int, str, str, Any]] = []
    seen_orders: set[str] = set()
    for order in events.orders:
        _check_order(customer_id, order, seen_orders)
        ordered_at = _utc_naive(order.ordered_at)
        if ordered_at >= as_of_end:
            continue
        queue.append((ordered_at, MOVEMENT_RANK["earn"], order.order_id, "earn", order))
        if order.status.strip().lower() in CLAWBACK_STATUSES:
            changed = _utc_naive(order.status_changed_at) if order.status_changed_at else None
            note = None
            if changed is None:
                changed, note = (
                    ordered_at,
                    "status_changed_at missing: clawback dated at ordered_at",
                )
            elif changed < ordered_at:
                changed, note = (
                    ordered_at,
                    "status_changed_at before ordered_at: clawback dated at ordered_at",
                )
            if changed < as_of_end:
                queue.append((changed, MOVEMENT_RANK["clawback"], order.order_id, "clawback", note))
    for redemption in events.redemptions:
        redeemed_at = _utc_naive(redemption.redeemed_at)
        if redeemed_at < as_of_end:
            queue.append(
                (
                    redeemed_at,
                    MOVEMENT_RANK["redeem"],
                    redemption.redemption_id,
                    "redeem",
                    redemption,
                )
            )
    queue.sort(key=lambda item: (item[0], item[1], item[2]))

    ledger: list[LedgerRow] = []
    rejects: list[RedemptionReject] = []
    lots: list[_Lot] = []
    lot_of_order: dict[str, _Lot] = {}
    expiry_heap: list[tuple[datetime, int]] = []  # (expires_at, index in lots)
    seen_redemptions: set[str] = set()
    balance = 0

    def add_row(
        occurred_at: datetime,
        kind: str,
        points: int,
        order_id: str | None = None,
        redemption_id: str | None = None,
        level: str | None = None,
        is_birthday_month: bool | None = None,
        lot_expires_at: datetime | None = None,
        points_shortfall: int | None = None,
        note: str | None = None,
    ) -> None:
        nonlocal balance
        balance += points
        ledger.append(
            LedgerRow(
                f"{kind}:{order_id if redemption_id is None else redemption_id}",
                customer_id,
                len(ledger) + 1,
                occurred_at,
                kind,
                points,
                order_id,
                redemption_id,
                level,
                is_birthday_month,
                lot_expires_at,
                points_shortfall,
                balance,
                note,
            )
        )

    def expire_until(moment: datetime, inclusive: bool) -> None:
        while expiry_heap and (
            expiry_heap[0][0] <= moment if inclusive else expiry_heap[0][0] < moment
        ):
            expires_at, index = heapq.heappop(expiry_heap)
            lot = lots[index]
            if lot.remaining > 0:
                lot.expired, amount, lot.remaining = lot.remaining, lot.remaining, 0
                add_row(expires_at, "expire", -amount, order_id=lot.order_id, level=lot.level)

    first_open = 0  # lots before this index are empty for good (lots are never refilled)

    def consume_fifo(amount: int, skip: _Lot | None = None) -> int:
        """Take up to ``amount`` from the lots, oldest first; returns what was taken."""
        nonlocal first_open
        while first_open < len(lots) and lots[first_open].remaining == 0:
            first_open += 1
        taken = 0
        for index in range(first_open, len(lots)):
            lot = lots[index]
            if taken == amount:
                break
            if lot is skip or lot.remaining == 0:
                continue
            step = min(lot.remaining, amount - taken)
            lot.remaining -= step
            taken += step
        return taken

    for occurred_at, _rank, reference, kind, payload in queue:
        expire_until(occurred_at, inclusive=True)
        if kind == "earn":
            order: Order = payload
            points, is_birthday, note = _earned_points(order, rules, birth_month)
            if points == 0:
                continue
            expires_at = (
                _add_months(occurred_at, rules.points_expiry_months)
                if rules.points_expiry_months
                else None
            )
            lot = _Lot(
                order.order_id,
                occurred_at,
                expires_at,
                points,
                order.membership_level_at_order,
                points,
            )
            lots.append(lot)
            lot_of_order[order.order_id] = lot
            if expires_at is not None:
                heapq.heappush(expiry_heap, (expires_at, len(lots) - 1))
            add_row(
                occurred_at,
                "earn",
                points,
                order_id=order.order_id,
                level=lot.level,
                is_birthday_month=is_birthday,
                lot_expires_at=expires_at,
                note=note,
            )
        elif kind == "redeem":
            redemption: Redemption = payload
            requested = _whole_points(redemption.points)
            reason = None
            if redemption.redemption_id in seen_redemptions:
                reason = "duplicate_redemption_id"
            elif requested is None or requested <= 0:
                reason = "invalid_points"
            elif requested > balance:
                reason = "insufficient_balance"
            seen_redemptions.add(redemption.redemption_id)
            if reason is not None:
                rejects.append(
                    RedemptionReject(
                        redemption.redemption_id,
                        customer_id,
                        occurred_at,
                        requested,
                        reason,
                        balance,
                    )
                )
                continue
            consume_fifo(requested)
            add_row(occurred_at, "redeem", -requested, redemption_id=redemption.redemption_id)
        else:  # clawback
            lot = lot_of_order.get(reference)
            if lot is None:
                continue  # the order earned nothing, there is nothing to take back
            due = lot.points - lot.expired
            from_own = min(lot.remaining, due)
            lot.remaining -= from_own
            from_others = consume_fifo(due - from_own, skip=lot)
            taken = from_own + from_others
            shortfall = lot.points - taken
            notes = [payload] if payload else []
            if shortfall:
                unpaid = due - taken
                notes.append(
                    f"order earned {lot.points} points, {shortfall} could not be taken back "
                    f"({lot.expired} had already expired, {unpaid} had been spent and the "
                    "balance did not cover them)"
                )
            add_row(
                occurred_at,
                "clawback",
                -taken,
                order_id=reference,
                level=lot.level,
                points_shortfall=shortfall,
                note="; ".join(notes) or None,
            )
    expire_until(as_of_end, inclusive=False)

    return LedgerResult(ledger, rejects, _balance_row(customer_id, ledger, lots, as_of_date))


def _balance_row(
    customer_id: str, ledger: list[LedgerRow], lots: list[_Lot], as_of_date: date
) -> BalanceRow:
    totals: Counter[str] = Counter()
    for row in ledger:
        totals[row.movement_type] += row.points
    as_of_end = datetime.combine(as_of_date + timedelta(days=1), time())
    soon = as_of_end + timedelta(days=EXPIRING_SOON_DAYS)
    open_lots = [lot for lot in lots if lot.remaining > 0 and lot.expires_at is not None]
    return BalanceRow(
        customer_id=customer_id,
        points_balance=sum(totals.values()),
        points_earned_total=totals["earn"],
        points_redeemed_total=-totals["redeem"],
        points_expired_total=-totals["expire"],
        points_clawed_back_total=-totals["clawback"],
        points_expiring_next_30d=sum(lot.remaining for lot in open_lots if lot.expires_at < soon),
        next_expiry_date=min(lot.expires_at for lot in open_lots).date() if open_lots else None,
        last_movement_at=ledger[-1].occurred_at if ledger else None,
        as_of_date=as_of_date,
    )


def _earned_points(
    order: Order, rules: LoyaltyRules, birth_month: int | None
) -> tuple[int, bool, str | None]:
    level = (order.membership_level_at_order or "").strip().lower()
    multiplier = rules.level_multipliers.get(level)
    note = None
    if multiplier is None:
        multiplier = Decimal(1)
        note = (
            f"membership level {order.membership_level_at_order!r} has no multiplier in "
            f"{LEVELS_TABLE}: multiplier 1 used"
        )
    is_birthday = birth_month is not None and _utc_naive(order.ordered_at).month == birth_month
    if is_birthday:
        multiplier *= rules.birthday_month_multiplier
    raw = _decimal(order.amount) * rules.base_points_per_currency_unit * multiplier
    return int(raw.to_integral_value(rounding=ROUND_FLOOR)), is_birthday, note


def _check_order(customer_id: str, order: Order, seen: set[str]) -> None:
    if order.order_id in seen:
        raise ValueError(
            f"Order {order.order_id!r} of customer {customer_id!r} appears twice in "
            f"{ORDERS_TABLE}. The model must have one row per order: check its join to "
            "membership levels."
        )
    seen.add(order.order_id)
    if order.ordered_at is None:
        raise ValueError(
            f"Order {order.order_id!r} has no ordered_at; {ORDERS_TABLE} must not hold such "
            "orders. Quarantine them in staging."
        )
    status = (order.status or "").strip().lower()
    if status not in EARNING_STATUSES:
        raise ValueError(
            f"Order {order.order_id!r} has status {order.status!r}; {ORDERS_TABLE} must only "
            f"hold {', '.join(sorted(EARNING_STATUSES))}. Fix the status mapping "
            "(seeds/order_status_aliases.csv) or filter the model."
        )
    try:
        amount = None if order.amount is None else _decimal(order.amount)
    except ValueError:
        amount = None
    if amount is None or amount < 0:
        raise ValueError(
            f"Order {order.order_id!r} has amount {order.amount!r}; {ORDERS_TABLE} must hold a "
            "non-negative amount in the reporting currency. Quarantine such orders in staging."
        )


def _whole_points(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        number = _decimal(value)
    except ValueError:
        return None
    return int(number) if number == number.to_integral_value() else None


def _decimal(value: Any) -> Decimal:
    """Exact decimal of a number; floats go through their shortest repr (0.29 → 0.29)."""
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        result = Decimal(repr(value))
    else:
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation as exc:
            raise ValueError(f"{value!r} is not a number") from exc
    if not result.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return result


def _utc_naive(value: datetime) -> datetime:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _add_months(moment: datetime, months: int) -> datetime:
    """Same time of day ``months`` calendar months later; Jan 31 + 1 month → Feb 28/29."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    if moment.day <= 28:
        return moment.replace(year=year, month=month)
    return moment.replace(year=year, month=month, day=min(moment.day, _days_in(year, month)))


def _days_in(year: int, month: int) -> int:
    if month == 2:
        return 29 if calendar.isleap(year) else 28
    return 30 if month in (4, 6, 9, 11) else 31


# --------------------------------------------------------------------------------------------
# Batch driver: DuckDB in, marts out
# --------------------------------------------------------------------------------------------

_LEDGER_SCHEMA = pa.schema(
    [
        ("movement_id", pa.string()),
        ("customer_id", pa.string()),
        ("movement_seq", pa.int32()),
        ("occurred_at", pa.timestamp("us")),
        ("movement_type", pa.string()),
        ("points", pa.int64()),
        ("order_id", pa.string()),
        ("redemption_id", pa.string()),
        ("membership_level_at_order", pa.string()),
        ("is_birthday_month", pa.bool_()),
        ("lot_expires_at", pa.timestamp("us")),
        ("points_shortfall", pa.int64()),
        ("balance_after", pa.int64()),
        ("note", pa.string()),
    ]
)
_BALANCE_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("points_balance", pa.int64()),
        ("points_earned_total", pa.int64()),
        ("points_redeemed_total", pa.int64()),
        ("points_expired_total", pa.int64()),
        ("points_clawed_back_total", pa.int64()),
        ("points_expiring_next_30d", pa.int64()),
        ("next_expiry_date", pa.date32()),
        ("last_movement_at", pa.timestamp("us")),
        ("as_of_date", pa.date32()),
    ]
)
_REJECT_SCHEMA = pa.schema(
    [
        ("redemption_id", pa.string()),
        ("customer_id", pa.string()),
        ("redeemed_at", pa.timestamp("us")),
        ("points", pa.int64()),
        ("reject_reason", pa.string()),
        ("available_balance", pa.int64()),
    ]
)
_OUTPUTS: tuple[tuple[str, pa.Schema], ...] = (
    (LEDGER_TABLE, _LEDGER_SCHEMA),
    (BALANCES_TABLE, _BALANCE_SCHEMA),
    (REJECTS_TABLE, _REJECT_SCHEMA),
)
_DUCKDB_TYPES = {
    pa.string(): "varchar",
    pa.int32(): "integer",
    pa.int64(): "bigint",
    pa.bool_(): "boolean",
    pa.timestamp("us"): "timestamp",
    pa.date32(): "date",
}
_NEW_SUFFIX = "__new"
# Output rows kept in Python before they are written (bounds memory whatever the batch size).
_FLUSH_ROWS = 200_000


@dataclass
class LoyaltyBuildReport:
    """What :func:`build_loyalty_tables` wrote, for logs and Dagster metadata."""

    as_of_date: date
    batches: int = 0
    customers: int = 0
    ledger_rows: int = 0
    redemption_rejects: int = 0
    movement_counts: dict[str, int] = field(default_factory=dict)
    reject_reasons: dict[str, int] = field(default_factory=dict)
    points_outstanding: int = 0


def read_as_of_date(con: duckdb.DuckDBPyConnection) -> date:
    """The warehouse's as-of date, decided once by the dbt model ``intermediate.int_as_of_date``."""
    _require_tables(con, [AS_OF_TABLE], "run the dbt models first (or pass as_of_date)")
    row = con.execute(f"select max(as_of_date) from {AS_OF_TABLE}").fetchone()
    if row is None or row[0] is None:
        raise ValueError(f"{AS_OF_TABLE} is empty; run the dbt models first (or pass as_of_date).")
    return row[0]


def build_loyalty_tables(
    con: duckdb.DuckDBPyConnection,
    as_of_date: date | None = None,
    batch_size: int = 50_000,
) -> LoyaltyBuildReport:
    """Rebuild ``marts.loyalty_points_ledger``, ``marts.loyalty_balances`` and
    ``marts.loyalty_redemption_rejects`` from scratch as of ``as_of_date``.

    Customers are processed in batches of ``batch_size`` consecutive customer ids, so only one
    batch's events are in Python memory at a time. The three tables are written as
    ``<name>__new`` and swapped in one transaction at the end: a failure anywhere leaves the
    previous tables untouched (and the ``__new`` tables dropped). The result does not depend on
    ``batch_size``. ``as_of_date`` defaults to ``intermediate.int_as_of_date``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if as_of_date is None:
        as_of_date = read_as_of_date(con)
    rules = load_rules(con)
    _require_tables(
        con,
        [ORDERS_TABLE, BIRTH_MONTHS_TABLE, REDEMPTIONS_TABLE],
        "run the dbt models first (dbt build, or materialize the upstream assets)",
    )
    _check_unique(con, ORDERS_TABLE, "order_id")
    _check_unique(con, BIRTH_MONTHS_TABLE, "customer_id")

    report = LoyaltyBuildReport(as_of_date=as_of_date)
    con.execute("create schema if not exists marts")
    try:
        for table, schema in _OUTPUTS:
            columns = ", ".join(f"{f.name} {_DUCKDB_TYPES[f.type]}" for f in schema)
            con.execute(f"create or replace table {table}{_NEW_SUFFIX} ({columns})")
        boundaries = con.execute(
            f"""
            with customers as (
                select cast(customer_id as varchar) as customer_id from {ORDERS_TABLE}
                where customer_id is not null and cast(ordered_at as date) <= $as_of
                union
                select cast(customer_id as varchar) from {REDEMPTIONS_TABLE}
                where customer_id is not null and cast(redeemed_at as date) <= $as_of
            ),
            numbered as (
                select
                    customer_id,
                    (row_number() over (order by customer_id) - 1) // $batch_size as batch_no
                from customers
            )
            select min(customer_id), max(customer_id) from numbered
            group by batch_no order by batch_no
            """,
            {"as_of": as_of_date, "batch_size": batch_size},
        ).fetchall()
        movement_counts: Counter[str] = Counter()
        reject_reasons: Counter[str] = Counter()
        ledger_rows: list[LedgerRow] = []
        balances: list[BalanceRow] = []
        rejects: list[RedemptionReject] = []

        def flush() -> None:
            """Write the buffers; called per batch and whenever the ledger buffer is large."""
            _append(con, LEDGER_TABLE + _NEW_SUFFIX, ledger_rows, _LEDGER_SCHEMA)
            _append(con, BALANCES_TABLE + _NEW_SUFFIX, balances, _BALANCE_SCHEMA)
            _append(con, REJECTS_TABLE + _NEW_SUFFIX, rejects, _REJECT_SCHEMA)
            report.customers += len(balances)
            report.ledger_rows += len(ledger_rows)
            report.redemption_rejects += len(rejects)
            report.points_outstanding += sum(b.points_balance for b in balances)
            movement_counts.update(row.movement_type for row in ledger_rows)
            reject_reasons.update(reject.reject_reason for reject in rejects)
            ledger_rows.clear()
            balances.clear()
            rejects.clear()

        for low, high in boundaries:
            for events in _read_batch(con, low, high, as_of_date):
                result = compute_ledger(events, rules, as_of_date)
                ledger_rows += result.ledger
                rejects += result.rejected_redemptions
                balances.append(result.balance)
                if len(ledger_rows) >= _FLUSH_ROWS:
                    flush()
            flush()
            report.batches += 1
        report.movement_counts = dict(sorted(movement_counts.items()))
        report.reject_reasons = dict(sorted(reject_reasons.items()))
        _swap_in(con)
    except BaseException:
        for table, _schema in _OUTPUTS:
            # Keep the original error; a leftover __new table is replaced by the next run.
            with contextlib.suppress(duckdb.Error):
                con.execute(f"drop table if exists {table}{_NEW_SUFFIX}")
        raise
    return report


def _swap_in(con: duckdb.DuckDBPyConnection) -> None:
    """Replace the three tables by their ``__new`` versions, all or nothing."""
    con.begin()
    try:
        for table, _schema in _OUTPUTS:
            bare_name = table.split(".", 1)[1]
            con.execute(f"drop table if exists {table}")
            con.execute(f"alter table {table}{_NEW_SUFFIX} rename to {bare_name}")
        con.commit()
    except BaseException:
        con.rollback()
        raise


def _read_batch(
    con: duckdb.DuckDBPyConnection, low: str, high: str, as_of_date: date
) -> list[CustomerEvents]:
    """Events of the customers whose id is in [low, high], one CustomerEvents each, by id."""
    params = {"low": low, "high": high, "as_of": as_of_date}
    orders: dict[str, list[Order]] = defaultdict(list)
    for row in _stream(
        con.execute(
            f"""
        select
            cast(customer_id as varchar), cast(order_id as varchar), ordered_at, amount, status,
            membership_level_at_order, status_changed_at
        from {ORDERS_TABLE}
        where cast(customer_id as varchar) between $low and $high
            and cast(ordered_at as date) <= $as_of
        """,
            params,
        )
    ):
        orders[row[0]].append(Order(*row[1:]))
    redemptions: dict[str, list[Redemption]] = defaultdict(list)
    for row in _stream(
        con.execute(
            f"""
        select cast(customer_id as varchar), cast(redemption_id as varchar), redeemed_at, points
        from {REDEMPTIONS_TABLE}
        where cast(customer_id as varchar) between $low and $high
            and cast(redeemed_at as date) <= $as_of
        """,
            params,
        )
    ):
        redemptions[row[0]].append(Redemption(*row[1:]))
    birth_months = dict(
        con.execute(
            f"""
            select cast(customer_id as varchar), birth_month from {BIRTH_MONTHS_TABLE}
            where cast(customer_id as varchar) between $low and $high
            """,
            {"low": low, "high": high},
        ).fetchall()
    )
    return [
        CustomerEvents(
            customer_id=customer_id,
            orders=orders.get(customer_id, ()),
            redemptions=redemptions.get(customer_id, ()),
            birth_month=birth_months.get(customer_id),
        )
        for customer_id in sorted(orders.keys() | redemptions.keys())
    ]


def _stream(result: duckdb.DuckDBPyConnection, size: int = 20_000) -> Iterator[tuple]:
    """Rows of a query result in chunks, so the raw tuples of a batch are never all in memory."""
    while chunk := result.fetchmany(size):
        yield from chunk


def _append(
    con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[Any], schema: pa.Schema
) -> None:
    if not rows:
        return
    names = list(rows[0]._fields)
    if names != schema.names:  # a programming error, caught by the tests
        raise TypeError(f"{type(rows[0]).__name__} fields do not match the columns of {table}")
    columns = zip(*rows, strict=True)
    arrow = pa.table(dict(zip(names, map(list, columns), strict=True)), schema=schema)
    con.register("_loyalty_rows", arrow)
    try:
        con.execute(f"insert into {table} select * from _loyalty_rows")
    finally:
        con.unregister("_loyalty_rows")


def _require_tables(con: duckdb.DuckDBPyConnection, tables: Sequence[str], fix: str) -> None:
    present = {
        f"{schema}.{name}"
        for schema, name in con.execute(
            "select table_schema, table_name from information_schema.tables"
        ).fetchall()
    }
    missing = [table for table in tables if table not in present]
    if missing:
        raise LookupError(f"Table(s) {', '.join(missing)} not found in the warehouse: {fix}.")


def _check_unique(con: duckdb.DuckDBPyConnection, table: str, column: str) -> None:
    duplicates = con.execute(
        f"select {column} from {table} group by {column} having count(*) > 1 "
        f"order by {column} limit 5"
    ).fetchall()
    if duplicates:
        shown = ", ".join(repr(value) for (value,) in duplicates)
        raise ValueError(
            f"{table} must have one row per {column}, but these repeat: {shown}. Fix the dbt "
            "model (its unique test should catch this) and run again."
        )
