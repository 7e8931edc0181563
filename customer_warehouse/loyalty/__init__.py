"""Loyalty points: an append-only ledger of dated point movements, and what is derived from it.

Rules (the numbers come from the dbt seeds ``seeds/loyalty_rules.csv`` and
``seeds/loyalty_level_multipliers.csv``; the behaviour below lives only in this package):

* **Earn.** Every order with status completed, cancelled or refunded earns at ``ordered_at``
  ``floor(amount × base_points_per_currency_unit × level multiplier × birthday multiplier)``
  points, computed in exact decimal arithmetic. The level multiplier is that of
  ``membership_level_at_order``: the level the customer held at the moment of the order, from
  what was known at that moment (``int_orders_joined_to_membership_levels``: an order refunded
  or cancelled *later* still counted then), so a later refund never changes the points an
  earlier order earned. An unknown or missing level earns with multiplier 1 and says so in
  ``note``. The birthday multiplier applies when the UTC month of ``ordered_at`` is the
  customer's birth month; it is folded into the single ``earn`` entry and flagged by
  ``is_birthday_month`` (one entry, one lot, one clawback per order). An order earning 0
  points produces no entry.
* **Pending.** Earned points are *pending* for ``pending_days`` days (the return window):
  ``available_at`` = the order's time + ``pending_days``. Pending points are in the balance but
  cannot be redeemed, and nothing but their own order's clawback takes them. 0 = available at
  once. ``pending_days`` must stay below the shortest expiry (28 days per month).
* **Lots and expiry.** Each earn (and each positive adjustment) is a lot. It expires
  ``points_expiry_months`` calendar months after it became available (after the order itself
  when ``pending_days`` is 0; same time of day; day clamped to the month's end; 0 = never).
  What is left of a lot at that moment leaves in one ``expire`` entry dated at the expiry
  moment.
* **FIFO.** Redemptions, the spent part of a clawback and negative adjustments consume the
  available lots in the order they became available (same moment: the older lot, then earn
  before adjustment, then by id) — oldest first.
* **Redeem.** A redemption (``staging.stg_shop__redemptions``) needing more points than the
  available balance at that moment (non-expired, not pending) is refused with
  ``insufficient_balance`` and that available balance (never clamped). Also refused:
  ``invalid_points`` (empty, zero, negative, fractional) and ``duplicate_redemption_id`` (a
  later row with an id already seen).
* **Clawback.** A cancelled or refunded order gives back, at ``status_changed_at``, the points
  it earned: first what is left of its own lot, then — for the part of that lot already
  spent — points from the other available lots, oldest first. Points of that lot that already
  expired are not taken again (the customer lost them already). What cannot be taken because
  the available balance is exhausted is recorded in ``points_shortfall`` and ``note``; the
  balance never goes negative. A missing ``status_changed_at`` (or one before ``ordered_at``)
  dates the clawback at ``ordered_at``, with a note.
* **Adjustments.** Manual adjustments (``staging.stg_shop__point_adjustments``, the file
  ``point_adjustments.csv``, docs/raw-data.md) with a reason code from
  ``seeds/point_adjustment_reasons.csv``: a positive one is a lot like an earn (available at
  once, expires ``points_expiry_months`` after it); a negative one takes points from the
  available lots oldest first, never more than the available balance (the rest is
  ``points_shortfall``).
* **Same timestamp order:** expire → earn → redeem → clawback → adjust; within a type by
  order_id / redemption_id / adjustment_id (expiries by lot age). So points expiring at
  instant t cannot be spent at t, points earned (and available) at t can, and a redemption at
  t is judged before a clawback at t. Pending points becoming available at t can be spent at t.
* **As-of.** A run as of date D knows the events up to the end of D (``< D + 1 day``): orders
  placed, cancellations and refunds recorded, redemptions, adjustments, expiries.

The ledger (``marts.loyalty_points_ledger``) is **append-only**:

* Every entry is keyed by its event: ``movement_id`` is ``earn:<order_id>``,
  ``clawback:<order_id>``, ``redeem:<redemption_id>``, ``adjust:<adjustment_id>``,
  ``expire:<order_id>`` or ``expire:adjust:<adjustment_id>``; an entry's lot is its
  ``order_id`` (or ``adjustment_id``). No entry is ever updated or deleted.
* A run as of D posts the entries of the **window** [H, D + 1 day), where H (the horizon) is
  the day after the last as-of date posted (``marts.loyalty_liability_daily`` holds one row per
  posted day): the entries whose event happened by the end of D and that are not posted yet,
  computed from the state the posted entries left. A rerun for a posted day, or a run for an
  earlier date than the last one posted, posts nothing (its window is empty) and only rebuilds
  ``marts.loyalty_balances`` as of its date from the posted ledger (entries up to that date).
* An event that arrives after its day was posted (a refund recorded late, a late export) is
  posted at H, the start of the first open window (``occurred_at`` = H, ``event_at`` = when it
  happened, with a note). So the past never moves: the balance on any date is
  ``sum(points)`` of the entries with ``occurred_at`` before the end of that day, now and later.
  A lot posted late counts its pending days and expiry from H.
* ``movement_seq`` numbers a customer's entries in ledger order and ``balance_after`` is the
  running balance; ``posted_as_of`` is the as-of date of the run that posted the entry (the
  only column that depends on which runs were made).
* A chain of runs in which no event is late posts exactly the entries a single run as of the
  last date posts (:func:`rebuild_ledger`, the full recompute), whatever the dates were, in
  whatever order, however often repeated.

Derived tables (all from the ledger):

* ``marts.loyalty_redemption_rejects`` (append-only like the ledger): refused redemptions with
  the reason and the available balance at that moment.
* ``marts.loyalty_liability_daily`` (append-only): one row per day up to the last as-of date:
  points outstanding (pending + available) at the end of the day, pending, available, the day's
  movements by type, and the liability in money (outstanding × ``point_value``, the seed's
  value at the run that posted the day).
* ``marts.loyalty_balances`` (rebuilt every run, as of the run's date): per customer balance,
  available and pending points, totals, the points expiring within ``expiring_soon_days`` after
  the as-of date and the next expiry date, and — levels are spend- and order-based
  (``seeds/tiers/membership_levels.csv``), not points-based — the spend and orders still needed
  to keep the level or reach the next (from ``int_customers_evaluated_for_membership_levels``
  when it was computed for the same as-of date; null otherwise).

How (set-based, no loop per customer): DuckDB SQL gathers the window's events and the lots
(earns, positive adjustments) of the customers concerned; numpy settles them for all
customers at once. A customer's *line* is their lots not expired and not clawed back, laid end
to end in the order they became available; consumption is oldest-first, so what is consumed
is always a prefix of the line: one number per customer, the pointer P, and the available
balance is the end of the line's available part minus P (pending lots sit at the top). An
expiry moves P to the end of its lot (``P = max(P, end_j)``), consumption moves it forward
(``P += points``), a clawback removes its lot from the line (later lots move down by its size)
and is capped by the available points. A month-end clamp (Jan 31 + 1 month = Feb 28, time of
day kept) can make a lot expire before one that became available earlier; such an expiry
takes its lot out of the line instead, like a clawback. With the per-event steps known, P over
the whole event stream is one cumulative sum and one running maximum. The steps that depend on
the state — whether a redemption fits, whether a clawback or negative adjustment is capped,
what an expired lot lost, what a clamped expiry leaves — are first assumed (accepted,
uncapped, nothing), then checked against the states the pass computed; every event whose
assumption was wrong gets the value the pass computed, and the pass is repeated for the
customers concerned only. The first wrong event of a customer is always right after one pass
(everything before it was right), so this ends; in practice after a handful of passes, the
later ones on a few customers. The per-customer state machine these rules describe is kept as
the test oracle (tests/loyalty_reference.py).

The package, in the order a run goes (each module's docstring says what it reads and writes):

* ``rules.py``: :class:`LoyaltyRules` and :func:`load_rules` (the seeds, checked).
* ``schema.py``: table names, column lists and the integer codes of events, lots, requests.
* ``gather.py``: the window's new events (orders to earn, clawbacks, redemptions,
  adjustments) as temporary tables; ``lots.py``: the customers concerned, their lots and
  requests.
* ``window.py``: the window in memory (Arrow, numpy) and its events in ledger order.
* ``settle.py``: the settlement described above (numpy).
* ``append.py``: the entries and refusals appended; ``daily.py``: the days appended and the
  horizon; ``balances.py``: the balances rebuilt.
* ``post.py``: the runs (:func:`post_ledger`, :func:`rebuild_ledger`) in one transaction;
  ``duck.py``: small DuckDB helpers. Connections, transactions, table look-ups and the as-of
  date are ``customer_warehouse.warehouse``'s.
"""

from customer_warehouse.loyalty.daily import read_horizon
from customer_warehouse.loyalty.post import LoyaltyReport, post_ledger, rebuild_ledger
from customer_warehouse.loyalty.rules import LoyaltyRules, load_rules
from customer_warehouse.loyalty.schema import (
    ADJUSTMENTS_TABLE,
    BALANCES_TABLE,
    BIRTH_MONTHS_TABLE,
    CLAWBACK_STATUSES,
    DAILY_TABLE,
    EARNING_STATUSES,
    LEDGER_TABLE,
    LEVEL_GAPS_TABLE,
    LEVELS_TABLE,
    MOVEMENT_RANK,
    ORDERS_TABLE,
    REDEMPTION_REJECT_REASONS,
    REDEMPTIONS_TABLE,
    REJECTS_TABLE,
    RULES_TABLE,
)

__all__ = [
    "ADJUSTMENTS_TABLE",
    "BALANCES_TABLE",
    "BIRTH_MONTHS_TABLE",
    "CLAWBACK_STATUSES",
    "DAILY_TABLE",
    "EARNING_STATUSES",
    "LEDGER_TABLE",
    "LEVEL_GAPS_TABLE",
    "LEVELS_TABLE",
    "MOVEMENT_RANK",
    "ORDERS_TABLE",
    "REDEMPTION_REJECT_REASONS",
    "REDEMPTIONS_TABLE",
    "REJECTS_TABLE",
    "RULES_TABLE",
    "LoyaltyReport",
    "LoyaltyRules",
    "load_rules",
    "post_ledger",
    "read_horizon",
    "rebuild_ledger",
]
