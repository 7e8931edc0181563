{#-
    int_orders_joined_to_membership_levels computes each order's level with a running sum; this
    recounts the 12-month spend and orders before each order with a plain self-join and checks
    that both give the same level. A second, independent implementation of the counting: an
    earlier order counts when it is a purchase, or was cancelled/refunded only after this order.
    The settings and the level thresholds are read through the same macros as the models
    (cw_tier_settings, cw_highest_membership_level_met): they are the rules, not the counting.
-#}
with

orders as (select * from {{ ref('int_orders_filtered_to_as_of_date') }}),

joined as (select * from {{ ref('int_orders_joined_to_membership_levels') }}),

membership_levels as (select * from {{ ref('membership_levels') }}),

settings as (
    {{ cw_tier_settings() }}
),

recounted as (
    select
        this_order.order_id,
        coalesce(sum(earlier.amount), 0) as spend_before,
        count(earlier.order_id) as orders_before
    from orders as this_order
    cross join settings
    left join orders as earlier
        on this_order.customer_id = earlier.customer_id
            and (earlier.is_purchase or this_order.ordered_at < earlier.status_changed_at)
            and (
                this_order.ordered_at > earlier.ordered_at
                or (
                    this_order.ordered_at = earlier.ordered_at
                    and this_order.order_id > earlier.order_id
                )
            )
            and {{ cw_add_months('earlier.ordered_date', 'settings.window_months') }}
            > this_order.ordered_date
    group by this_order.order_id
),

recounted_levels as (
    {{ cw_highest_membership_level_met('recounted', 'order_id', 'spend_before', 'orders_before') }}
)

select
    joined.order_id,
    joined.membership_level_at_order,
    membership_levels.membership_level as recounted_level
from joined
inner join recounted_levels
    on joined.order_id = recounted_levels.order_id
inner join membership_levels
    on recounted_levels.level_rank = membership_levels.level_rank
where joined.membership_level_at_order <> membership_levels.membership_level
