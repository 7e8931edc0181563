{#-
    One row per accepted order placed on or before the as-of date, with its status as known on
    that date (a later refund has not happened yet). The order-level facts BI tools and the
    semantic layer (models/semantic/) read: revenue by day, month, channel and status. A
    purchase is a completed order; revenue counts purchases only, as customer_features does.
-#}
with

orders as (select * from {{ ref('int_orders_filtered_to_as_of_date') }}),

final as (
    select
        order_id,
        customer_id,
        ordered_at,
        ordered_date,
        channel,
        status,
        is_purchase,
        amount,
        discount_amount,
        as_of_date
    from orders
)

select * from final
