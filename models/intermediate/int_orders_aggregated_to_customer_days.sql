{#-
    One row per customer and purchase day (a day with at least one completed order, as of the
    as-of date). Several orders on one day are one purchase occasion: the convention of the
    buy-till-you-die literature, used for frequency, recency and purchase cycles, while
    orders_count and revenue still count every order.
    Incremental (macros/incremental): every row belongs to one customer and depends on that
    customer's orders only, so a filtered run recomputes the customers whose orders changed or
    crossed the as-of date since the last run (cw_affected_customers) and keeps the others.
-#}
{{ cw_customer_incremental_config(unique_key=['customer_id', 'purchase_date']) }}

with

orders as (
    {{ cw_orders_of_affected_customers() }}
),

purchase_days as (
    select
        customer_id,
        ordered_date as purchase_date,
        count(*) as orders_count,
        sum(amount) as revenue
    from orders
    where is_purchase
    group by customer_id, ordered_date
),

sequenced as (
    select
        customer_id,
        purchase_date,
        orders_count,
        revenue,
        row_number() over (
            partition by customer_id order by purchase_date
        ) as purchase_day_number,
        lag(purchase_date) over (
            partition by customer_id order by purchase_date
        ) as previous_purchase_date
    from purchase_days
),

final as (
    select
        customer_id,
        purchase_date,
        purchase_day_number,
        orders_count,
        cast(revenue as decimal(18, 2)) as revenue,
        previous_purchase_date,
        {{ cw_days_between('previous_purchase_date', 'purchase_date') }}
            as days_since_previous_purchase
    from sequenced
)

select * from final
