"""Files of what buyers do besides ordering.

``redemptions`` (points spent by a subset of repeat customers, never more than a fraction of the
unexpired points earned since their previous redemption and at least 15 days old, past the
return window, so they are valid under the loyalty rules in ``seeds/loyalty_rules.csv``; ~3 %
are deliberately larger than any possible balance and listed in
``truth/over_redemptions.csv``), ``point_adjustments`` (one manual adjustment for ~1 % of buyers,
with a reason code of ``seeds/point_adjustment_reasons.csv``), ``surveys/responses_YYYY_qN.csv|
json`` (NPS and satisfaction correlated with spend and whether the customer is still active).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from customer_warehouse.demo.draws import (
    day_between,
    segment_starts,
    timestamp_styles,
    utc_on_days,
)
from customer_warehouse.demo.params import LOCAL_OFFSET_SECONDS, Shares
from customer_warehouse.demo.simulation import Window, World
from customer_warehouse.demo.text import digits, format_timestamps
from customer_warehouse.demo.vocab import (
    ADJUSTMENT_REASON_WEIGHTS,
    ADJUSTMENT_REASONS,
    COMMENTS,
    COMMENTS_PER_CATEGORY,
    NEED_TAG_SHARES,
    NEED_TAGS,
    NPS_CATEGORIES,
)


def redemptions_table(
    rng: np.random.Generator, world: World, shares: Shares, window: Window
) -> tuple[pa.Table, list[str]]:
    """Points spent by a subset of repeat customers.

    Each redemption follows an anchor purchase day by 15-59 days (after the 14-day return
    window, so the points are no longer pending) and spends 20-80 % of the points earned on the
    days after the previous anchor (and within 180 days before this one). The windows are
    disjoint, redemptions of a customer are in anchor order, and the points used are at most 239
    days old, so with first-in-first-out use and a 12-month expiry the balance always covers
    them. ~3 % are replaced by amounts above anything the customer could hold.
    """
    buyers, customers, completed = world.buyers, world.people, world.completed
    start_epoch_day, n_days = window.start_epoch_day, window.n_days
    nb = len(buyers.index)
    counts = np.bincount(completed.buyer, minlength=nb)
    starts = segment_starts(counts)
    repeat = buyers.draw.repeat_purchases >= 1
    redeemer = repeat & (rng.random(nb) < shares.redeemers)
    wanted = np.minimum(1 + rng.poisson(0.8, nb), counts) * redeemer
    # Pick `wanted` distinct anchor orders per redeemer: rank a random key within the customer.
    candidates = np.flatnonzero(redeemer[completed.buyer])
    owner = completed.buyer[candidates]
    order = np.lexsort((rng.random(len(candidates)), owner))
    candidates, owner = candidates[order], owner[order]
    rank = np.arange(len(candidates)) - np.searchsorted(owner, owner, side="left")
    anchors = np.sort(candidates[rank < wanted[owner]])
    owner = completed.buyer[anchors]
    anchor_day = completed.day[anchors]
    key = completed.buyer.astype(np.int64) * 1_000_000 + completed.day
    cum = np.concatenate(([0], np.cumsum(completed.points)))
    first_of_customer = np.ones(len(anchors), dtype=bool)
    first_of_customer[1:] = owner[1:] != owner[:-1]
    previous_day = np.where(first_of_customer, -1_000_000, np.concatenate(([0], anchor_day[:-1])))
    window_start = np.maximum(previous_day + 1, anchor_day - 180)
    hi = np.searchsorted(key, owner * 1_000_000 + anchor_day, side="right")
    lo = np.searchsorted(key, owner * 1_000_000 + window_start, side="left")
    earned = cum[hi] - cum[np.minimum(lo, hi)]
    points = (np.floor(rng.uniform(0.2, 0.8, len(anchors)) * earned / 10) * 10).astype(np.int64)
    day = anchor_day + rng.integers(15, 60, len(anchors))
    utc = utc_on_days(rng, start_epoch_day, day)
    # Keep a customer's redemptions in anchor order (strictly increasing times).
    segment = np.cumsum(first_of_customer) - 1
    shifted = utc - np.arange(len(utc)) + segment.astype(np.int64) * 10**12
    utc = np.maximum.accumulate(shifted) - segment.astype(np.int64) * 10**12 + np.arange(len(utc))
    keep = (points >= 10) & (utc < (start_epoch_day + n_days) * 86400 - LOCAL_OFFSET_SECONDS)
    owner, utc, points = owner[keep], utc[keep], points[keep]
    over = rng.random(len(points)) < shares.over_redemptions
    lifetime = cum[starts + counts][owner] - cum[starts][owner]
    # Above 4x lifetime points: more than any level x birthday multiplier could have earned.
    points = np.where(over, (lifetime * 4 // 10 + 100) * 10, points)
    order = np.argsort(utc, kind="stable")
    owner, utc, points, over = owner[order], utc[order], points[order], over[order]
    number = customers.number[buyers.index[owner]]
    style = timestamp_styles(rng, shares, len(utc))
    ids = digits(np.arange(1, len(utc) + 1), 9, "R")
    table = pa.table(
        {
            "redemption_id": ids,
            "customer_id": digits(number, 7, "C"),
            "redeemed_at": format_timestamps(utc, style),
            "points": pc.cast(pa.array(points), pa.string()),
        }
    )
    over_ids = ids.filter(pa.array(over)).to_pylist()
    return table, over_ids


def adjustments_table(
    rng: np.random.Generator, world: World, shares: Shares, window: Window
) -> pa.Table:
    """Manual point adjustments (a customer-service file): one for a share of buyers, on a day
    between their first and last purchase day, with a reason code; a correction takes 10-100
    points (the ledger takes at most the available balance), the others give 50-500."""
    buyers, customers = world.buyers, world.people
    chosen = np.flatnonzero(rng.random(len(buyers.index)) < shares.adjusted)
    day = day_between(rng, buyers.first_day[chosen], buyers.last_day[chosen])
    utc = utc_on_days(rng, window.start_epoch_day, day)
    reason = rng.choice(len(ADJUSTMENT_REASONS), len(chosen), p=ADJUSTMENT_REASON_WEIGHTS)
    taking = np.asarray(ADJUSTMENT_REASONS)[reason] == "correction"
    points = np.where(
        taking, -rng.integers(1, 11, len(chosen)) * 10, rng.integers(5, 51, len(chosen)) * 10
    )
    order = np.argsort(utc, kind="stable")
    chosen, utc, points, reason = chosen[order], utc[order], points[order], reason[order]
    return pa.table(
        {
            "adjustment_id": digits(np.arange(1, len(chosen) + 1), 8, "A"),
            "customer_id": digits(customers.number[buyers.index[chosen]], 7, "C"),
            "points": pc.cast(pa.array(points), pa.string()),
            "reason": pa.array(np.asarray(ADJUSTMENT_REASONS)[reason]),
            "adjusted_at": format_timestamps(utc, timestamp_styles(rng, shares, len(utc))),
        }
    )


def _nps_category(score: int) -> str:
    """The category of an NPS score (seeds/tiers/nps_categories.csv)."""
    return [name for name, lowest in NPS_CATEGORIES if score >= lowest][-1]


def survey_responses(
    rng: np.random.Generator, world: World, shares: Shares, window: Window
) -> list[dict[str, Any]]:
    """Survey responses of ~12 % of buyers; NPS and satisfaction rise with spend and with the
    customer still being active, price is named more by small spenders, quality by big ones."""
    buyers, customers, completed = world.buyers, world.people, world.completed
    nb = len(buyers.index)
    if nb == 0:
        return []
    spend = np.bincount(completed.buyer, weights=completed.points, minlength=nb)
    log_spend = np.log1p(spend)
    z = (log_spend - log_spend.mean()) / (log_spend.std() or 1.0)
    active = ~buyers.draw.dropped_out
    respondent = np.flatnonzero(rng.random(nb) < shares.survey_respondents)
    times = 1 + (rng.random(len(respondent)) < 0.15)
    who = np.repeat(respondent, times)
    m = len(who)
    day = day_between(rng, buyers.first_day[who], window.n_days - 1)
    utc = utc_on_days(rng, window.start_epoch_day, day)
    score = 0.6 * z[who] + 0.6 * active[who] - 0.3 + rng.normal(0, 0.8, m)
    nps = np.clip(np.rint(7.0 + 1.5 * score), 0, 10).astype(int)
    satisfaction = np.clip(np.rint(3.7 + 0.7 * score + rng.normal(0, 0.4, m)), 1, 5).astype(int)
    tag_probability = np.column_stack(
        [share + change * (z[who] > 0) for share, change in NEED_TAG_SHARES]
    )
    tags = rng.random((m, len(NEED_TAGS))) < tag_probability
    tags[np.arange(m), rng.integers(0, len(NEED_TAGS), m)] |= ~tags.any(axis=1)
    comment_pick = rng.integers(0, COMMENTS_PER_CATEGORY, m)
    no_comment = rng.random(m) < 0.2
    style = timestamp_styles(rng, shares, m)
    order = np.argsort(utc, kind="stable")
    submitted = format_timestamps(utc[order], style[order]).to_pylist()
    number = customers.number[buyers.index[who[order]]]
    quarter_of = (np.datetime64("1970-01-01") + utc[order] // 86400).astype("datetime64[M]")
    months = quarter_of.astype(np.int64)
    responses = []
    for j, k in enumerate(order.tolist()):
        bucket = _nps_category(int(nps[k]))
        responses.append(
            {
                "response_id": f"S{j + 1:08d}",
                "customer_id": f"C{int(number[j]):07d}",
                "submitted_at": submitted[j],
                "nps": int(nps[k]),
                "satisfaction": int(satisfaction[k]),
                "comment": "" if no_comment[k] else COMMENTS[bucket][comment_pick[k]],
                "need_tags": [t for t, on in zip(NEED_TAGS, tags[k], strict=True) if on],
                "_quarter": (int(months[j]) // 12 + 1970, int(months[j]) % 12 // 3 + 1),
            }
        )
    return responses
