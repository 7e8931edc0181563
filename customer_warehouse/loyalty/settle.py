"""Settling a window: every event's effect for all customers at once, with numpy.

The line of a customer is their lots that have not expired or been clawed back, laid end to
end in the order they became available; P is the pointer below which everything is consumed
(or, within the window, expired). Tav is the end of the line's available part (pending lots
are at the top), so the available balance is Tav - P. Only expiries and consuming events
move P; the passes run on those alone, and after the first pass only on the customers whose
assumptions were wrong. Full-length arrays are touched only to find and place them. The
method as a whole is described in the package docstring.

Reads and writes no table: arrays in (``window.py``), arrays out (:class:`Settled`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from customer_warehouse.loyalty.schema import (
    ADJUST,
    AVAIL,
    CLAW,
    EARN,
    EXPIRE,
    LEDGER_TABLE,
    MAX_POINTS,
    REDEEM,
)
from customer_warehouse.loyalty.window import Window, at


@dataclass
class Settled:
    """The entries (rows ``emitted`` of the event arrays) and refusals (rows ``refused``)."""

    emitted: np.ndarray
    amount: np.ndarray  # per emitted entry: lot size, requested or adjusted points
    points: np.ndarray
    balance_after: np.ndarray
    movement_seq: np.ndarray
    shortfall: np.ndarray
    expired_before: np.ndarray  # clawback: what of its lot had expired
    refused: np.ndarray
    available_before: np.ndarray  # per refused redemption


def settle(events: dict[str, np.ndarray], window: Window) -> tuple[Settled, int]:
    """Every event's effect, all customers at once; and how many passes it took."""
    p0 = window.t0 - window.b0
    if (p0 < 0).any() or (window.t0 >= MAX_POINTS).any():
        raise ValueError(
            f"{LEDGER_TABLE} is inconsistent (a balance above its lots, or beyond "
            f"{MAX_POINTS:,} points). Rebuild the ledger (loyalty.rebuild_ledger)."
        )
    facts = _Facts.of(events, window)
    moves = _Moves.of(facts, window)
    step, before, after, passes = _converge(moves, p0)
    return _entries(facts, window, moves, step, before, after), passes


def _within(values: np.ndarray, rows: np.ndarray, starts: np.ndarray, owner: np.ndarray):
    """Cumulative sum of ``values`` (full length) up to ``rows``, within their customer."""
    total = np.cumsum(values)
    first = starts[owner[rows]]
    return total[rows] - total[first] + values[first]


@dataclass
class _Facts:
    """What the events are, before any state: expiries, clawbacks, the available part's
    changes, and where each expiring lot lies in the line."""

    cust: np.ndarray
    kind: np.ndarray
    lot: np.ndarray
    request: np.ndarray
    request_amount: np.ndarray  # per event: the request's points (0 for lot events)
    event_start: np.ndarray  # per customer: first event row
    expiries: np.ndarray  # event rows
    expiry_lots: np.ndarray
    clamped: np.ndarray  # per expiry: a clamped one
    expiry_position: np.ndarray  # per lot: the event row of its expiry, or -1
    claws: np.ndarray  # event rows
    claw_lot: np.ndarray
    claw_out: np.ndarray  # per clawback: its lot is no longer in the line
    d_avail: np.ndarray | None = None  # per event: change of Tav
    line: dict[str, np.ndarray] | None = None  # plain/clamped expiries: rows, end or start in line

    @classmethod
    def of(cls, events: dict[str, np.ndarray], window: Window) -> _Facts:
        cust, kind, lot = events["cust"], events["kind"], events["lot"]
        lots = window.lot
        expiries = np.flatnonzero(kind == EXPIRE)
        expiry_lots = lot[expiries]
        expiry_position = np.full(len(lots["points"]), -1)
        expiry_position[expiry_lots] = expiries
        claws = np.flatnonzero(kind == CLAW)
        claw_lot = lot[claws]
        # A clawback of a lot no longer in the line (expired before the window, or taken out
        # at a clamped expiry) takes the spent part from the other lots; any other removes it.
        claw_out = lots["expired_before"][claw_lot] | (
            lots["clamped"][claw_lot] & (expiry_position[claw_lot] >= 0)
        )
        facts = cls(
            cust=cust,
            kind=kind,
            lot=lot,
            request=events["request"],
            request_amount=at(window.request["amount"], events["request"]),
            event_start=np.searchsorted(cust, np.arange(len(window.b0))),
            expiries=expiries,
            expiry_lots=expiry_lots,
            clamped=lots["clamped"][expiry_lots],
            expiry_position=expiry_position,
            claws=claws,
            claw_lot=claw_lot,
            claw_out=claw_out,
        )
        facts.d_avail = facts._available_changes(lots)
        facts.line = facts._line_positions(lots, len(window.b0))
        return facts

    def _available_changes(self, lots: dict[str, np.ndarray]) -> np.ndarray:
        """Tav: lots join the available part when created available (no pending days, a
        positive adjustment) or at available_at, and leave it when removed from the line."""
        kind, lot, size = self.kind, self.lot, lots["points"]
        claw_lot, clamped = self.claw_lot, self.clamped
        claw_available = lots["available_at"][claw_lot] <= lots["claw_at"][claw_lot]
        earns = np.flatnonzero(kind == EARN)
        earn_lot = lot[earns]
        d_avail = np.zeros(len(kind), dtype=np.int64)
        d_avail[earns] = np.where(
            lots["available_at"][earn_lot] <= lots["lot_at"][earn_lot], size[earn_lot], 0
        )
        avails = np.flatnonzero(kind == AVAIL)
        d_avail[avails] = size[lot[avails]]
        adds = np.flatnonzero((self.request >= 0) & (kind == ADJUST) & (self.request_amount > 0))
        d_avail[adds] = self.request_amount[adds]
        d_avail[self.claws] = np.where(~self.claw_out & claw_available, -size[claw_lot], 0)
        d_avail[self.expiries[clamped]] = -size[self.expiry_lots[clamped]]
        return d_avail

    def _line_positions(self, lots: dict[str, np.ndarray], customers: int) -> dict:
        """Where each expiring lot lies in the line at that moment: its cumulative size, minus
        the lots at or before it that left the line before that moment."""
        size, clamped, expiry_lots = lots["points"], self.clamped, self.expiry_lots
        lot_start = np.searchsorted(lots["cust"], np.arange(customers))
        claw_lot, claw_out = self.claw_lot, self.claw_out
        deleted = np.concatenate((claw_lot[~claw_out], expiry_lots[clamped]))
        deleted_at = np.concatenate((self.claws[~claw_out], self.expiries[clamped]))
        by_lot = np.argsort(deleted, kind="stable")
        deleted, deleted_at = deleted[by_lot], deleted_at[by_lot]
        deleted_sizes = np.concatenate(([0], np.cumsum(size[deleted])))
        line_size = np.where(lots["expired_before"], 0, size)
        line_end = _within(line_size, expiry_lots, lot_start, lots["cust"])
        expiry_owner = lots["cust"][expiry_lots]
        line_end -= (
            deleted_sizes[np.searchsorted(deleted, expiry_lots, side="right")]
            - deleted_sizes[np.searchsorted(deleted, lot_start[expiry_owner], side="left")]
        )
        # A plain expiry comes after everything before it in the line (no clamp): only
        # clawbacks at or after it, of lots at or before it, must be added back.
        plain_at, plain_lots = self.expiries[~clamped], expiry_lots[~clamped]
        in_line = ~claw_out
        low = np.searchsorted(plain_lots, claw_lot[in_line], side="left")
        high = np.searchsorted(plain_at, self.claws[in_line], side="right")
        keep = low < high
        late = np.zeros(len(plain_at) + 1, dtype=np.int64)
        np.add.at(late, low[keep], size[claw_lot[in_line][keep]])
        np.add.at(late, high[keep], -size[claw_lot[in_line][keep]])
        # A clamped expiry: pair it with the earlier lots of its customer that left the line.
        clamped_at, clamped_lots = self.expiries[clamped], expiry_lots[clamped]
        first = np.searchsorted(deleted, lot_start[lots["cust"][clamped_lots]], side="left")
        counts = np.searchsorted(deleted, clamped_lots, side="left") - first
        pair_expiry = np.repeat(np.arange(len(clamped_at)), counts)
        pair_deleted = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        pair_deleted += np.repeat(first, counts)
        still_there = deleted_at[pair_deleted] >= clamped_at[pair_expiry]
        back = np.zeros(len(clamped_at), dtype=np.int64)
        np.add.at(back, pair_expiry[still_there], size[deleted[pair_deleted[still_there]]])
        return {
            "plain_at": plain_at,
            "plain_end": line_end[~clamped] + np.cumsum(late)[:-1],
            "clamped_at": clamped_at,
            "clamped_start": line_end[clamped] + back,  # line_end already left the lot out
        }


@dataclass
class _Moves:
    """The events that move P (expiries, redemptions, clawbacks, negative adjustments) and
    what each needs; the ``q_`` arrays of the method, one row per such event."""

    rows: np.ndarray  # event rows
    cust: np.ndarray
    exp: np.ndarray
    clamped: np.ndarray
    plain: np.ndarray
    redeem: np.ndarray
    claw: np.ndarray
    takes: np.ndarray
    size: np.ndarray
    amount: np.ndarray
    valid: np.ndarray
    out: np.ndarray
    known: np.ndarray  # clawback of a lot expired before the window: what expired of it
    av_after: np.ndarray
    av_before: np.ndarray
    line: np.ndarray  # plain expiry: end of its lot in the line; clamped: start
    expiry: np.ndarray  # clawback: the row of its lot's expiry among the moves, or -1

    @classmethod
    def of(cls, facts: _Facts, window: Window) -> _Moves:
        kind, lots, requests = facts.kind, window.lot, window.request
        moves = np.flatnonzero(
            (kind == EXPIRE)
            | (kind == REDEEM)
            | (kind == CLAW)
            | ((kind == ADJUST) & (facts.request_amount < 0))
        )
        q_kind, q_lot, q_request = kind[moves], facts.lot[moves], facts.request[moves]
        q_exp, q_claw, q_redeem = q_kind == EXPIRE, q_kind == CLAW, q_kind == REDEEM
        q_clamped = q_exp & at(lots["clamped"], q_lot)
        q_size = at(lots["points"], q_lot)
        q_out = np.zeros(len(moves), dtype=bool)
        q_out[np.searchsorted(moves, facts.claws)] = facts.claw_out
        q_cust = facts.cust[moves]
        q_av_after = window.tav0[q_cust] + _within(
            facts.d_avail, moves, facts.event_start, facts.cust
        )
        q_line = np.zeros(len(moves), dtype=np.int64)
        q_line[np.searchsorted(moves, facts.line["plain_at"])] = facts.line["plain_end"]
        q_line[np.searchsorted(moves, facts.line["clamped_at"])] = facts.line["clamped_start"]
        claw_expiry = at(facts.expiry_position, q_lot)
        return cls(
            rows=moves,
            cust=q_cust,
            exp=q_exp,
            clamped=q_clamped,
            plain=q_exp & ~q_clamped,
            redeem=q_redeem,
            claw=q_claw,
            takes=q_kind == ADJUST,
            size=q_size,
            amount=np.where(q_exp | q_claw, q_size, at(requests["amount"], q_request)),
            valid=np.where(q_redeem, at(requests["valid"], q_request), True),
            out=q_out,
            known=np.where(
                q_claw & at(lots["expired_before"], q_lot), at(lots["expired_points"], q_lot), -1
            ),
            av_after=q_av_after,
            av_before=q_av_after - facts.d_avail[moves],
            line=q_line,
            expiry=np.where(
                q_claw & (claw_expiry >= 0), np.searchsorted(moves, np.maximum(claw_expiry, 0)), -1
            ),
        )

    def expired_by(self, before: np.ndarray, after: np.ndarray, step: np.ndarray) -> np.ndarray:
        """What each expiry took: a plain one what P moved, a clamped one its lot's rest."""
        return np.where(self.plain, after - before, np.where(self.clamped, self.size + step, 0))

    def lost_by(self, expired: np.ndarray) -> np.ndarray:
        """Per clawback: what of its lot had expired."""
        return np.where(
            self.known >= 0, self.known, np.where(self.expiry >= 0, expired[self.expiry], 0)
        )

    def first_steps(self) -> np.ndarray:
        """First assumption: every valid redemption accepted, nothing capped or lost, a clamped
        expiry's lot untouched."""
        step = np.where(self.redeem & self.valid, self.amount, 0)
        step = np.where(self.claw & self.out, self.size - np.maximum(self.known, 0), step)
        return np.where(self.takes, -self.amount, step)

    def true_steps(self, idx: np.ndarray, before: np.ndarray, lost: np.ndarray) -> np.ndarray:
        """The steps of the moves ``idx`` given the pointer ``before`` each of them."""
        room = self.av_after[idx] - before  # the available balance after the event's change
        amount = self.amount[idx]
        fits = self.valid[idx] & (amount <= self.av_before[idx] - before)
        step = np.where(self.redeem[idx] & fits, amount, 0)
        step = np.where(
            self.claw[idx],
            np.minimum(np.where(self.out[idx], self.size[idx], 0) - lost, room),
            step,
        )
        step = np.where(self.takes[idx], np.minimum(-amount, room), step)
        return np.where(
            self.clamped[idx], -np.clip(before - self.line[idx], 0, self.size[idx]), step
        )


def _converge(moves: _Moves, p0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Assume, walk, check, correct, for the customers with a wrong assumption only, until
    every step is what the states give: (steps, P before, P after, passes)."""
    step = moves.first_steps()
    before_all = np.zeros(len(moves.rows), dtype=np.int64)
    after_all = np.zeros(len(moves.rows), dtype=np.int64)
    active = np.ones(len(p0), dtype=bool)
    passes = 0
    while len(moves.rows):
        passes += 1
        idx = np.flatnonzero(active[moves.cust])
        sub_cust = moves.cust[idx]
        sub_firsts = segment_firsts(sub_cust)
        before, after = _walk(
            sub_cust, sub_firsts, step[idx], moves.plain[idx], moves.line[idx], p0
        )
        before_all[idx], after_all[idx] = before, after
        lost = moves.lost_by(moves.expired_by(before_all, after_all, step))[idx]
        true_step = moves.true_steps(idx, before, lost)
        wrong = true_step != step[idx]
        if not wrong.any():
            break
        if passes > len(moves.rows):  # cannot happen: each pass settles one more event at least
            raise RuntimeError("the loyalty settlement did not converge")
        step[idx] = true_step
        active[:] = False
        active[sub_cust[wrong]] = True
    return step, before_all, after_all, passes


def _entries(
    facts: _Facts,
    window: Window,
    moves: _Moves,
    step: np.ndarray,
    before_all: np.ndarray,
    after_all: np.ndarray,
) -> Settled:
    """The entries: new lots (earns, positive adjustments) and the moves that post one."""
    kind, size = facts.kind, window.lot["points"]
    expired = moves.expired_by(before_all, after_all, step)
    lost = moves.lost_by(expired)
    fits = moves.redeem & (step > 0)
    claw, takes, out = moves.claw, moves.takes, moves.out
    q_points = np.where(moves.exp, -expired, -step)
    q_points = np.where(claw & ~out, -moves.size - step, q_points)
    q_emit = claw | takes | (moves.redeem & fits) | (moves.exp & (expired > 0))
    q_shortfall = np.where(claw & ~out, -step, 0)
    q_shortfall = np.where(claw & out, moves.size - step, q_shortfall)
    q_shortfall = np.where(takes, -moves.amount - step, q_shortfall)
    creations = np.flatnonzero((kind == EARN) | ((kind == ADJUST) & (facts.request_amount > 0)))
    emitted = np.concatenate((creations, moves.rows[q_emit]))
    order = np.argsort(emitted, kind="stable")
    emitted = emitted[order]
    creation_amount = np.where(
        kind[creations] == EARN, at(size, facts.lot[creations]), facts.request_amount[creations]
    )
    no_creation = np.zeros(len(creations), dtype=np.int64)
    points = np.concatenate((creation_amount, q_points[q_emit]))[order]
    owner = facts.cust[emitted]
    firsts = segment_firsts(owner)
    refused = moves.redeem & ~fits
    return Settled(
        emitted=emitted,
        amount=np.concatenate((creation_amount, moves.amount[q_emit]))[order],
        points=points,
        balance_after=window.b0[owner] + _cumsum_within(points, firsts),
        movement_seq=window.seq0[owner] + np.arange(len(emitted)) - firsts + 1,
        shortfall=np.concatenate((no_creation, q_shortfall[q_emit]))[order],
        expired_before=np.concatenate((no_creation, np.where(claw, lost, 0)[q_emit]))[order],
        refused=moves.rows[refused],
        available_before=(moves.av_before - before_all)[refused],
    )


def segment_firsts(keys: np.ndarray) -> np.ndarray:
    """For every element of a sorted key array, the index of the first element with its key."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = keys[1:] != keys[:-1]
    return np.flatnonzero(starts)[np.cumsum(starts) - 1]


def _cumsum_within(values: np.ndarray, firsts: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at every segment; ``firsts``: each element's segment start."""
    total = np.cumsum(values)
    return total - total[firsts] + values[firsts]


def _cummax_within(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Running maximum restarting at every segment; values in [0, 2**41), segments sorted.

    Each segment is lifted above all earlier ones (its rank in the chunk × 2**41), so one
    ``maximum.accumulate`` serves all of them; 2**21 segments at a time keep it inside int64.
    """
    if len(values) == 0:
        return values.copy()
    rank = np.cumsum(np.concatenate(([0], segment[1:] != segment[:-1])))
    out = np.empty_like(values)
    chunk = 2**21
    for low_rank in range(0, int(rank[-1]) + 1, chunk):
        low, high = np.searchsorted(rank, [low_rank, low_rank + chunk])
        lift = (rank[low:high] - low_rank) << 41
        out[low:high] = np.maximum.accumulate(values[low:high] + lift) - lift
    return out


def _walk(
    cust: np.ndarray,
    firsts: np.ndarray,
    step: np.ndarray,
    expiry: np.ndarray,
    end_at: np.ndarray,
    p0: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The pointer before and after each event: P = moved + max(P0, max(end_j - moved_j)) over
    the plain expiries j so far (an expiry moves P to the end of its lot if it is below)."""
    moved = _cumsum_within(step, firsts)
    floor_ = p0[cust]
    floor_[expiry] = np.maximum(floor_[expiry], end_at[expiry] - moved[expiry])
    after = moved + _cummax_within(floor_, cust)
    before = np.empty_like(after)
    before[1:] = after[:-1]
    starts = np.flatnonzero(firsts == np.arange(len(cust)))
    before[starts] = p0[cust[starts]]
    return before, after
