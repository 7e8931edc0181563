{#-
    Every accepted order placed on or before the as-of date, with its status as it was known on
    that date: a cancellation or refund recorded after the as-of date had not happened yet, so
    such an order is still `completed` here (and its status_changed_at is null). Everything
    downstream reads orders through this model, so no feature, tier or level can see the future.
-#}
{%- set order_columns = [
    'order_id', 'customer_id', 'ordered_at', 'ordered_date', 'amount', 'discount_amount', 'channel'
] %}
with

orders as (select * from {{ ref('stg_shop__orders') }}),

cut_off as (
    select
        {%- for column in order_columns %}
            orders.{{ column }},
        {%- endfor %}
        orders.status as final_status,
        orders.status_changed_at as final_status_changed_at,
        {{ as_of_date() }} as as_of_date
    from orders
    where orders.ordered_date <= {{ as_of_date() }}
),

statuses_as_of as (
    select
        cut_off.*,
        case
            when final_status <> 'completed'
                and cast(final_status_changed_at as date) > as_of_date
                then 'completed'
            else final_status
        end as status,
        case
            when cast(final_status_changed_at as date) <= as_of_date
                then final_status_changed_at
        end as status_changed_at
    from cut_off
),

final as (
    select
        {%- for column in order_columns %}
            {{ column }},
        {%- endfor %}
        status,
        status_changed_at,
        status = 'completed' as is_purchase,
        as_of_date
    from statuses_as_of
)

select * from final
