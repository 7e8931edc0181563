{#- The as-of cut-off: no order, purchase day or status change later than the as-of date. -#}
with

orders as (select * from {{ ref('int_orders_filtered_to_as_of_date') }}),

customer_days as (select * from {{ ref('int_orders_aggregated_to_customer_days') }}),

late_orders as (
    select
        orders.order_id as offending_id,
        'order placed or changed after the as-of date' as problem
    from orders
    where orders.ordered_date > {{ as_of_date() }}
        or cast(orders.status_changed_at as date) > {{ as_of_date() }}
),

late_purchase_days as (
    select
        customer_days.customer_id as offending_id,
        'purchase day after the as-of date' as problem
    from customer_days
    where customer_days.purchase_date > {{ as_of_date() }}
)

select * from late_orders
union all
select * from late_purchase_days
