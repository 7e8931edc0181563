{#-
    A customer outside the grace period meets the thresholds of the level they hold; one in it
    holds a level above the one they qualify for and keeps it until a date not before the
    as-of date. The next level's thresholds are not met yet (otherwise it would be held).
-#}
with

tiers as (select * from {{ ref('customer_tiers') }}),

membership_levels as (select * from {{ ref('membership_levels') }})

select
    tiers.customer_id,
    tiers.membership_level,
    tiers.qualified_membership_level,
    tiers.spend_12m,
    tiers.orders_12m
from tiers
inner join membership_levels as held
    on tiers.membership_level = held.membership_level
inner join membership_levels as qualified
    on tiers.qualified_membership_level = qualified.membership_level
where
    (not tiers.is_in_grace_period and (
        tiers.spend_12m < held.min_spend_12m or tiers.orders_12m < held.min_orders_12m
        or held.level_rank <> qualified.level_rank
    ))
    or (tiers.is_in_grace_period and (
        held.level_rank <= qualified.level_rank
        or tiers.membership_level_kept_until < tiers.as_of_date
    ))
    or (tiers.spend_to_next_level = 0 and tiers.orders_to_next_level = 0)
