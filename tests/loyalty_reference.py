"""The loyalty rules as a plain per-customer state machine: the reference the set-based ledger
(customer_warehouse.loyalty) is checked against, and the row types the rule tests read.

This is the former ``customer_warehouse.loyalty.compute_ledger`` (a Python loop over one
customer's events, lots in a list, expiries in a heap), extended with the rules the
append-only ledger added: pending points (``pending_days``), lots in the order they became
available with expiry counted from then, manual adjustments, and the available balance for
redemptions. It follows the package docstring of customer_warehouse.loyalty literally and
shares no code with it, so an equal result is evidence, not a tautology. It computes one run
as of a date (the full recompute); the posting windows are tested separately.
"""

from __future__ import annotations

import bisect
import calendar
import heapq
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any, NamedTuple

from customer_warehouse.loyalty import LEVELS_TABLE, LoyaltyRules
from customer_warehouse.loyalty.rules import to_decimal as _decimal

EARNING_STATUSES = frozenset({"completed", "cancelled", "refunded"})
CLAWBACK_STATUSES = frozenset({"cancelled", "refunded"})
RANK = {"expire": 0, "earn": 1, "redeem": 2, "clawback": 3, "adjust": 4}


class Order(NamedTuple):
    order_id: str
    ordered_at: datetime
    amount: Decimal | float | int | None
    status: str
    membership_level_at_order: str | None
    status_changed_at: datetime | None = None


class Redemption(NamedTuple):
    redemption_id: str
    redeemed_at: datetime
    points: int | float | None


class Adjustment(NamedTuple):
    adjustment_id: str
    adjusted_at: datetime
    points: int
    reason: str = "goodwill"


@dataclass(frozen=True)
class CustomerEvents:
    customer_id: str
    orders: Sequence[Order] = ()
    redemptions: Sequence[Redemption] = ()
    birth_month: int | None = None
    adjustments: Sequence[Adjustment] = ()


class LedgerRow(NamedTuple):
    movement_id: str
    customer_id: str
    movement_seq: int
    occurred_at: datetime
    movement_type: str
    points: int
    order_id: str | None
    redemption_id: str | None
    membership_level_at_order: str | None
    is_birthday_month: bool | None
    lot_expires_at: datetime | None
    points_shortfall: int | None
    balance_after: int
    note: str | None
    adjustment_id: str | None = None
    available_at: datetime | None = None


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
    points_redeemed_total: int
    points_expired_total: int
    points_clawed_back_total: int
    points_expiring_next_30d: int  # within rules.expiring_soon_days
    next_expiry_date: date | None
    last_movement_at: datetime | None
    as_of_date: date
    points_available: int = 0
    points_pending: int = 0
    points_adjusted_total: int = 0


class LedgerResult(NamedTuple):
    ledger: list[LedgerRow]
    rejected_redemptions: list[RedemptionReject]
    balance: BalanceRow


@dataclass
class _Lot:
    key: tuple  # position in the line: (available_at, earned_at, rank, ref)
    order_id: str | None
    adjustment_id: str | None
    available_at: datetime
    expires_at: datetime | None
    points: int
    level: str | None
    remaining: int
    expired: int = 0
    clawed: bool = field(default=False)


def compute_ledger(events: CustomerEvents, rules: LoyaltyRules, as_of_date: date) -> LedgerResult:
    """One customer's ledger, refused redemptions and balance as of the end of ``as_of_date``."""
    as_of_end = datetime.combine(as_of_date + timedelta(days=1), time())
    book = _Book(events.customer_id, rules, events.birth_month)
    for moment, _rank, reference, kind, payload in event_queue(events, as_of_end):
        book.expire_until(moment, inclusive=True)
        if kind == "earn":
            book.earn(moment, reference, payload)
        elif kind == "redeem":
            book.redeem(moment, reference, payload)
        elif kind == "clawback":
            book.claw_back(moment, reference, payload)
        else:
            book.adjust(moment, reference, payload)
    book.expire_until(as_of_end, inclusive=False)
    balance = balance_row(events.customer_id, book.ledger, book.lots, as_of_date, rules)
    return LedgerResult(book.ledger, book.rejects, balance)


def event_queue(events: CustomerEvents, as_of_end: datetime) -> list[tuple]:
    """The customer's events before ``as_of_end`` in judging order: (moment, rank, reference,
    kind, payload); the orders are checked on the way."""
    queue: list[tuple[datetime, int, str, str, Any]] = []
    seen_orders: set[str] = set()
    for order in events.orders:
        check_order(events.customer_id, order, seen_orders)
        queue += _order_events(order, as_of_end)
    for redemption in events.redemptions:
        redeemed_at = utc_naive(redemption.redeemed_at)
        if redeemed_at < as_of_end:
            queue.append(
                (redeemed_at, RANK["redeem"], redemption.redemption_id, "redeem", redemption)
            )
    for adjustment in events.adjustments:
        if adjustment.adjusted_at < as_of_end:
            rank, reference = RANK["adjust"], adjustment.adjustment_id
            queue.append((adjustment.adjusted_at, rank, reference, "adjust", adjustment))
    # Python's sort is stable: equal keys keep their input order (duplicate redemption ids at
    # the same instant are judged in that order, as the set-based ledger orders them by points).
    queue.sort(key=lambda item: (item[0], item[1], item[2], _points_key(item)))
    return queue


def _order_events(order: Order, as_of_end: datetime) -> list[tuple]:
    """An order's earn and, when cancelled or refunded, its clawback (with the date's note)."""
    ordered_at = utc_naive(order.ordered_at)
    if ordered_at >= as_of_end:
        return []
    found: list[tuple] = [(ordered_at, RANK["earn"], order.order_id, "earn", order)]
    if order.status.strip().lower() in CLAWBACK_STATUSES:
        changed = utc_naive(order.status_changed_at) if order.status_changed_at else None
        note = None
        if changed is None:
            changed, note = (
                ordered_at,
                "status_changed_at missing: clawback dated at ordered_at",
            )
        elif changed < ordered_at:
            changed = ordered_at
            note = "status_changed_at before ordered_at: clawback dated at ordered_at"
        if changed < as_of_end:
            found.append((changed, RANK["clawback"], order.order_id, "clawback", note))
    return found


class _Book:
    """One customer's state while the events are judged: the ledger so far, the refusals, the
    line of lots (sorted by key, oldest available first) and the expiries still to come."""

    def __init__(self, customer_id: str, rules: LoyaltyRules, birth_month: int | None) -> None:
        self.customer_id, self.rules, self.birth_month = customer_id, rules, birth_month
        self.ledger: list[LedgerRow] = []
        self.rejects: list[RedemptionReject] = []
        self.lots: list[_Lot] = []  # kept sorted by key: the line, oldest available first
        self.lot_of_order: dict[str, _Lot] = {}
        self.expiry_heap: list[tuple[datetime, tuple, int]] = []
        self.seen_redemptions: set[str] = set()
        self.balance = 0
        self.created: list[_Lot] = []

    def add_row(self, moment: datetime, kind: str, points: int, ref: str, **extra: Any) -> None:
        self.balance += points
        prefix = "expire:adjust:" if kind == "expire" and extra.get("adjustment_id") else None
        self.ledger.append(
            LedgerRow(
                movement_id=(prefix or f"{kind}:") + ref,
                customer_id=self.customer_id,
                movement_seq=len(self.ledger) + 1,
                occurred_at=moment,
                movement_type=kind,
                points=points,
                order_id=extra.get("order_id"),
                redemption_id=extra.get("redemption_id"),
                membership_level_at_order=extra.get("level"),
                is_birthday_month=extra.get("is_birthday_month"),
                lot_expires_at=extra.get("lot_expires_at"),
                points_shortfall=extra.get("points_shortfall"),
                balance_after=self.balance,
                note=extra.get("note"),
                adjustment_id=extra.get("adjustment_id"),
                available_at=extra.get("available_at"),
            )
        )

    def available(self, moment: datetime) -> int:
        return sum(lot.remaining for lot in self.lots if lot.available_at <= moment)

    def expire_until(self, moment: datetime, inclusive: bool) -> None:
        heap = self.expiry_heap
        while heap and (heap[0][0] <= moment if inclusive else heap[0][0] < moment):
            expires_at, _key, index = heapq.heappop(heap)
            lot = self.created[index]
            if lot.clawed or lot.remaining == 0:
                continue
            lot.expired, amount, lot.remaining = lot.remaining, lot.remaining, 0
            ref = lot.order_id or lot.adjustment_id
            self.add_row(
                expires_at,
                "expire",
                -amount,
                ref,
                order_id=lot.order_id,
                adjustment_id=lot.adjustment_id,
                level=lot.level,
            )

    def consume(self, amount: int, moment: datetime) -> int:
        taken = 0
        for lot in self.lots:
            if taken == amount:
                break
            if lot.remaining == 0 or lot.available_at > moment:
                continue
            step = min(lot.remaining, amount - taken)
            lot.remaining -= step
            taken += step
        return taken

    def new_lot(self, key: tuple, ref: str, kind: str, points: int, level: str | None) -> _Lot:
        """A lot (an earn or a positive adjustment) joins the line; its expiry is scheduled."""
        months = self.rules.points_expiry_months
        available_at = key[0]
        lot = _Lot(
            key=key,
            order_id=ref if kind == "earn" else None,
            adjustment_id=ref if kind == "adjust" else None,
            available_at=available_at,
            expires_at=add_months(available_at, months) if months else None,
            points=points,
            level=level,
            remaining=points,
        )
        bisect.insort(self.lots, lot, key=lambda item: item.key)
        self.created.append(lot)
        if lot.expires_at is not None:
            heapq.heappush(self.expiry_heap, (lot.expires_at, lot.key, len(self.created) - 1))
        return lot

    def earn(self, moment: datetime, reference: str, order: Order) -> None:
        points, is_birthday, note = earned_points(order, self.rules, self.birth_month)
        if points == 0:
            return
        available_at = moment + timedelta(days=self.rules.pending_days)
        key = (available_at, moment, RANK["earn"], reference)
        lot = self.new_lot(key, reference, "earn", points, order.membership_level_at_order)
        self.lot_of_order[reference] = lot
        self.add_row(
            moment,
            "earn",
            points,
            reference,
            order_id=reference,
            level=lot.level,
            is_birthday_month=is_birthday,
            lot_expires_at=lot.expires_at,
            available_at=available_at,
            note=note,
        )

    def redeem(self, moment: datetime, reference: str, redemption: Redemption) -> None:
        requested = whole_points(redemption.points)
        reason = None
        open_points = self.available(moment)
        if reference in self.seen_redemptions:
            reason = "duplicate_redemption_id"
        elif requested is None or requested <= 0:
            reason = "invalid_points"
        elif requested > open_points:
            reason = "insufficient_balance"
        self.seen_redemptions.add(reference)
        if reason is not None:
            self.rejects.append(
                RedemptionReject(
                    reference, self.customer_id, moment, requested, reason, open_points
                )
            )
            return
        self.consume(requested, moment)
        self.add_row(moment, "redeem", -requested, reference, redemption_id=reference)

    def claw_back(self, moment: datetime, reference: str, date_note: str | None) -> None:
        lot = self.lot_of_order.get(reference)
        if lot is None:
            return
        due = lot.points - lot.expired
        from_own = min(lot.remaining, due)
        lot.remaining -= from_own
        lot.clawed = True
        self.lots.remove(lot)
        taken = from_own + self.consume(due - from_own, moment)
        shortfall = lot.points - taken
        notes = [date_note] if date_note else []
        if shortfall:
            notes.append(
                f"order earned {lot.points} points, {shortfall} could not be taken back "
                f"({lot.expired} had already expired, {due - taken} had been spent and the "
                "available balance did not cover them)"
            )
        self.add_row(
            moment,
            "clawback",
            -taken,
            reference,
            order_id=reference,
            level=lot.level,
            points_shortfall=shortfall,
            note="; ".join(notes) or None,
        )

    def adjust(self, moment: datetime, reference: str, adjustment: Adjustment) -> None:
        if adjustment.points > 0:
            key = (moment, moment, RANK["adjust"], reference)
            lot = self.new_lot(key, reference, "adjust", adjustment.points, None)
            self.add_row(
                moment,
                "adjust",
                adjustment.points,
                reference,
                adjustment_id=reference,
                lot_expires_at=lot.expires_at,
                available_at=moment,
            )
            return
        wanted = -adjustment.points
        taken = self.consume(wanted, moment)
        self.add_row(
            moment,
            "adjust",
            -taken,
            reference,
            adjustment_id=reference,
            points_shortfall=wanted - taken,
            note=(
                f"adjustment of {adjustment.points} points: {wanted - taken} could not be "
                "taken (the available balance did not cover them)"
                if wanted > taken
                else None
            ),
        )


def _points_key(item: tuple) -> float:
    if item[3] != "redeem":
        return 0.0
    value = item[4].points
    return float("-inf") if value is None else float(value)


def balance_row(
    customer_id: str,
    ledger: list[LedgerRow],
    lots: list[_Lot],
    as_of_date: date,
    rules: LoyaltyRules,
) -> BalanceRow:
    totals: Counter[str] = Counter()
    for row in ledger:
        totals[row.movement_type] += row.points
    as_of_end = datetime.combine(as_of_date + timedelta(days=1), time())
    soon = as_of_end + timedelta(days=rules.expiring_soon_days)
    open_lots = [lot for lot in lots if lot.remaining > 0 and lot.expires_at is not None]
    pending = sum(lot.remaining for lot in lots if lot.available_at >= as_of_end)
    balance = sum(totals.values())
    return BalanceRow(
        customer_id=customer_id,
        points_balance=balance,
        points_earned_total=totals["earn"],
        points_redeemed_total=-totals["redeem"],
        points_expired_total=-totals["expire"],
        points_clawed_back_total=-totals["clawback"],
        points_expiring_next_30d=sum(lot.remaining for lot in open_lots if lot.expires_at < soon),
        next_expiry_date=min(lot.expires_at for lot in open_lots).date() if open_lots else None,
        last_movement_at=ledger[-1].occurred_at if ledger else None,
        as_of_date=as_of_date,
        points_available=balance - pending,
        points_pending=pending,
        points_adjusted_total=totals["adjust"],
    )


def earned_points(
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
    is_birthday = birth_month is not None and utc_naive(order.ordered_at).month == birth_month
    if is_birthday:
        multiplier *= rules.birthday_month_multiplier
    raw = _decimal(order.amount) * rules.base_points_per_currency_unit * multiplier
    return int(raw.to_integral_value(rounding=ROUND_FLOOR)), is_birthday, note


def check_order(customer_id: str, order: Order, seen: set[str]) -> None:
    if order.order_id in seen:
        raise ValueError(f"Order {order.order_id!r} of customer {customer_id!r} appears twice")
    seen.add(order.order_id)
    if (order.status or "").strip().lower() not in EARNING_STATUSES:
        raise ValueError(f"Order {order.order_id!r} has status {order.status!r}")
    if order.amount is None or _decimal(order.amount) < 0:
        raise ValueError(f"Order {order.order_id!r} has amount {order.amount!r}")


def whole_points(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    number = _decimal(value)
    return int(number) if number == number.to_integral_value() else None


def utc_naive(value: datetime) -> datetime:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def add_months(moment: datetime, months: int) -> datetime:
    """Same time of day ``months`` calendar months later; Jan 31 + 1 month → Feb 28/29."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    return moment.replace(
        year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1])
    )
