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
    loyalty.py). The level of an order is therefore the same at every as-of date after it.
    The downgrade grace period is NOT applied here (docs/tiers.md): the loyalty points asset
    uses this level for its earning multiplier, where the simpler rule is the documented one.

    How: each counting order adds its amount at its ordered_at and takes it back when it stops
    counting; a running sum over these events (in time order, take-backs first at equal times)
    just before an order's own event is the balance that order sees.
    Incremental like int_orders_aggregated_to_customer_days: a customer's rows depend on that
    customer's orders only.
-#}
{{ config(
    unique_key='order_id',
    pre_hook="{{ cw_incremental_pre_hook('customers') }}",
    post_hook="{{ cw_incremental_post_hook('customers') }}",
) }}
{%- set plan = cw_incremental_plan('customers') %}
-- depends_on: {{ source('shop', 'deliveries') }}
-- depends_on: {{ ref('base_shop__orders') }}
-- depends_on: {{ ref('stg_shop__orders') }}
-- depends_on: {{ ref('int_as_of_date') }}

with

orders as (
    select * from {{ ref('int_orders_filtered_to_as_of_date') }}
    {%- if plan.mode == 'filter' %}
        where customer_id in ({{ cw_affected_customers(plan) }})
    {%- endif %}
),

membership_levels as (
    select * from {{ ref('membership_levels') }}
),

tier_settings as (
    select * from {{ ref('tier_settings') }}
),

settings as (
    select
        cast(
            max(
                case when setting_name = 'membership_window_months' then setting_value end
            ) as {{ dbt.type_int() }}
        ) as window_months
    from tier_settings
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
        coalesce(
            sum(spend_change) over (
                partition by customer_id order by event_at, event_order, order_id
                rows between unbounded preceding and 1 preceding
            ),
            0
        ) as spend_12m_before_order,
        coalesce(
            sum(orders_change) over (
                partition by customer_id order by event_at, event_order, order_id
                rows between unbounded preceding and 1 preceding
            ),
            0
        ) as orders_12m_before_order
    from events
),

level_ranks as (
    select
        balances_before.order_id,
        max(membership_levels.level_rank) as level_rank
    from balances_before
    inner join membership_levels
        on balances_before.spend_12m_before_order >= membership_levels.min_spend_12m
            and balances_before.orders_12m_before_order >= membership_levels.min_orders_12m
    where balances_before.is_order_event
    group by balances_before.order_id
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
