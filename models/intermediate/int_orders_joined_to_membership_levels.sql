{#-
    Every order placed by the as-of date with the membership level its customer held at the
    moment of the order, from what was known at that moment: the highest level of
    seeds/tiers/membership_levels.csv whose min_spend_12m and min_orders_12m are met by the
    customer's orders placed strictly before this order (earlier ordered_at; same timestamp:
    smaller order_id) that still count at this order's time. An order counts from its
    ordered_at until the day before the same day `membership_window_months` later, or until it
    was cancelled or refunded (status_changed_at), whichever comes first; one cancelled without
    a status time never counts. So a refund recorded after an order does not change that
    order's level: the loyalty points it earned are posted once and stay (customer_warehouse/
    loyalty/). The level of an order is therefore the same at every as-of date after it.
    The downgrade grace period is NOT applied here (docs/tiers.md): the loyalty points asset
    uses this level for its earning multiplier, where the simpler rule is the documented one.

    How: each counting order adds its amount at its ordered_at and takes it back when it stops
    counting; a running sum over these events (in time order, take-backs first at equal times)
    just before an order's own event is the balance that order sees.
    Incremental like int_orders_aggregated_to_customer_days: a customer's rows depend on that
    customer's orders only.
-#}
{{ cw_customer_incremental_config(unique_key='order_id') }}

with

orders as (
    {{ cw_orders_of_affected_customers() }}
),

membership_levels as (select * from {{ ref('membership_levels') }}),

settings as (
    {{ cw_tier_settings() }}
),

flagged_orders as (
    {#- A cancelled or refunded order counted from its ordered_at until its status change. -#}
    select
        orders.customer_id,
        orders.order_id,
        orders.ordered_at,
        orders.amount,
        orders.status_changed_at,
        orders.is_purchase
        or (
            orders.status_changed_at is not null
            and orders.status_changed_at > orders.ordered_at
        ) as is_counting,
        cast(
            {{ cw_add_months('orders.ordered_date', 'settings.window_months') }}
            as {{ dbt.type_timestamp() }}
        ) as window_end_at
    from orders
    cross join settings
),

events as (
    select
        customer_id,
        order_id,
        ordered_at as event_at,
        1 as event_order,
        case when is_counting then amount else 0 end as spend_change,
        case when is_counting then 1 else 0 end as orders_change,
        true as is_order_event
    from flagged_orders
    union all
    select
        customer_id,
        order_id,
        case
            when status_changed_at is not null and status_changed_at < window_end_at
                then status_changed_at
            else window_end_at
        end as event_at,
        0 as event_order,
        -amount as spend_change,
        -1 as orders_change,
        false as is_order_event
    from flagged_orders
    where is_counting
),

balances_before as (
    select
        customer_id,
        order_id,
        is_order_event,
        {%- set event_sequence = 'event_at, event_order, order_id' %}
        coalesce(
            {{ cw_running_sum('spend_change', 'customer_id', event_sequence, '1 preceding') }}, 0
        ) as spend_12m_before_order,
        coalesce(
            {{ cw_running_sum('orders_change', 'customer_id', event_sequence, '1 preceding') }}, 0
        ) as orders_12m_before_order
    from events
),

level_ranks as (
    {{ cw_highest_membership_level_met(
        'balances_before', 'order_id', 'spend_12m_before_order', 'orders_12m_before_order',
        where='balances_before.is_order_event'
    ) }}
),

final as (
    select
        orders.order_id,
        orders.customer_id,
        orders.ordered_at,
        orders.status_changed_at,
        orders.amount,
        orders.status,
        membership_levels.membership_level as membership_level_at_order
    from orders
    left join level_ranks
        on orders.order_id = level_ranks.order_id
    left join membership_levels
        on level_ranks.level_rank = membership_levels.level_rank
)

select * from final
