"""The ledger's vocabulary: the tables it reads and writes, their columns, and the small
integer codes the window's arrays use for events, lots and requests.

Reads and writes nothing; every other module of the package names tables through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import numpy as np

# Inputs: dbt models and seeds.
ORDERS_TABLE = "intermediate.int_orders_joined_to_membership_levels"
BIRTH_MONTHS_TABLE = "intermediate.int_customer_birth_months"
REDEMPTIONS_TABLE = "staging.stg_shop__redemptions"
ADJUSTMENTS_TABLE = "staging.stg_shop__point_adjustments"
LEVEL_GAPS_TABLE = "intermediate.int_customers_evaluated_for_membership_levels"
RULES_TABLE = "seeds.loyalty_rules"
LEVELS_TABLE = "seeds.loyalty_level_multipliers"

# Outputs.
LEDGER_TABLE = "marts.loyalty_points_ledger"
BALANCES_TABLE = "marts.loyalty_balances"
REJECTS_TABLE = "marts.loyalty_redemption_rejects"
DAILY_TABLE = "marts.loyalty_liability_daily"

EARNING_STATUSES = ("completed", "cancelled", "refunded")
CLAWBACK_STATUSES = ("cancelled", "refunded")

#: Order of movements that share a timestamp (documented in the package docstring).
MOVEMENT_RANK: Mapping[str, int] = {
    "expire": 0,
    "earn": 1,
    "redeem": 2,
    "clawback": 3,
    "adjust": 4,
}
REDEMPTION_REJECT_REASONS = ("invalid_points", "duplicate_redemption_id", "insufficient_balance")

# Event kinds of the scan, in same-timestamp order ("avail" = pending points become available;
# it is not an entry, only the moment from which a redemption may use them).
EXPIRE, AVAIL, EARN, REDEEM, CLAW, ADJUST = range(6)
# Kinds of lots and requests in the temporary tables (small integers, not text).
EARN_LOT, ADJUST_LOT = 0, 1
REDEEM_REQUEST, ADJUST_REQUEST = 0, 1
NEVER = np.iinfo(np.int64).max  # a timestamp that does not exist (no expiry, no clawback)
BEGINNING = datetime(1, 1, 1)  # the horizon of an empty ledger
MAX_POINTS = 2**40  # per customer; keeps the packed running maximum inside int64

# The window's temporary tables, dropped when the window is appended.
TEMP_TABLES = (
    "_lw_factors",
    "_lw_orders",
    "_lw_earn",
    "_lw_claw",
    "_lw_redeem",
    "_lw_adjust",
    "_lw_customers",
    "_lw_lots",
    "_lw_requests",
)

LEDGER_INSERTED = """
    customer_id, movement_seq, occurred_at, movement_type, points, order_id, redemption_id,
    adjustment_id, adjustment_reason, membership_level_at_order, is_birthday_month,
    available_at, lot_expires_at, points_shortfall, balance_after, note, event_at, posted_as_of
"""
# movement_id is computed from the entry's type and event id when read, never stored.
LEDGER_COLUMNS = """
    movement_id varchar generated always as (
        movement_type || ':' || case movement_type
            when 'redeem' then redemption_id
            when 'adjust' then adjustment_id
            else coalesce(order_id, 'adjust:' || adjustment_id)
        end
    ) virtual,
    customer_id varchar, movement_seq bigint, occurred_at timestamp,
    movement_type varchar, points bigint, order_id varchar,
    redemption_id varchar, adjustment_id varchar, adjustment_reason varchar,
    membership_level_at_order varchar, is_birthday_month boolean, available_at timestamp,
    lot_expires_at timestamp, points_shortfall bigint, balance_after bigint, note varchar,
    event_at timestamp, posted_as_of date
"""
REJECT_COLUMNS = """
    redemption_id varchar, customer_id varchar, redeemed_at timestamp, points bigint,
    reject_reason varchar, available_balance bigint, decided_at timestamp, posted_as_of date
"""
DAILY_COLUMNS = """
    day date, points_outstanding bigint, points_pending bigint, points_available bigint,
    points_earned bigint, points_redeemed bigint, points_expired bigint,
    points_clawed_back bigint, points_adjusted bigint, point_value decimal(18, 6),
    liability_amount decimal(38, 2), posted_as_of date
"""
APPEND_ONLY = (
    (LEDGER_TABLE, LEDGER_COLUMNS),
    (REJECTS_TABLE, REJECT_COLUMNS),
    (DAILY_TABLE, DAILY_COLUMNS),
)

# The day's (or the customer's) movements by type, over a relation of ledger entries.
MOVEMENT_SUMS = """
    coalesce(sum(points) filter (where movement_type = 'earn'), 0) as earned,
    -coalesce(sum(points) filter (where movement_type = 'redeem'), 0) as redeemed,
    -coalesce(sum(points) filter (where movement_type = 'expire'), 0) as expired,
    -coalesce(sum(points) filter (where movement_type = 'clawback'), 0) as clawed,
    coalesce(sum(points) filter (where movement_type = 'adjust'), 0) as adjusted
"""
