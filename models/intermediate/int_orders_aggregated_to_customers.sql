{#-
    Purchase behaviour per customer who has placed at least one order by the as-of date.
    Definitions (docs/tiers.md):
    - a purchase is a completed order; revenue is completed orders only, so refunded and
      cancelled orders are netted out;
    - frequency = purchase days - 1 (repeat purchase days); recency_days = days from the first
      to the last purchase day; tenure_days = days from the first purchase day to the as-of date
      (the BG/NBD inputs, in days);
    - "last N days" = orders dated after as-of date - N days, up to and including the as-of date;
    - the purchase cycle is the average and median gap between consecutive purchase days, and
      the next purchase is due one median gap after the last purchase day.
-#}
with

orders as (select * from {{ ref('int_orders_filtered_to_as_of_date') }}),

customer_days as (select * from {{ ref('int_orders_aggregated_to_customer_days') }}),

as_of as (select as_of_date from {{ ref('int_as_of_date') }}),

order_totals as (
    select
        orders.customer_id,
        count(*) as all_orders_count,
        sum(case when orders.is_purchase then 1 else 0 end) as orders_count,
        sum(case when orders.status = 'cancelled' then 1 else 0 end) as cancelled_orders_count,
        sum(case when orders.status = 'refunded' then 1 else 0 end) as refunded_orders_count,
        sum(case when orders.is_purchase then orders.amount else 0 end) as revenue,
        sum(case when orders.is_purchase then orders.discount_amount else 0 end)
            as discount_amount,
        {% for days in [30, 90, 365] -%}
            sum(
                case
                    when orders.is_purchase
                        and orders.ordered_date > {{ cw_add_days('as_of.as_of_date', -days) }}
                        then orders.amount
                    else 0
                end
            ) as spend_last_{{ days }}_days,
            sum(
                case
                    when orders.is_purchase
                        and orders.ordered_date > {{ cw_add_days('as_of.as_of_date', -days) }}
                        then 1
                    else 0
                end
            ) as orders_last_{{ days }}_days,
        {% endfor -%}
        sum(
            case when orders.is_purchase and orders.discount_amount > 0 then 1 else 0 end
        ) as discounted_orders_count
    from orders
    cross join as_of
    group by orders.customer_id
),

purchase_day_totals as (
    select
        customer_id,
        count(*) as purchase_days_count,
        min(purchase_date) as first_purchase_date,
        max(purchase_date) as last_purchase_date,
        sum(case when purchase_day_number > 1 then revenue else 0 end) as repeat_revenue,
        avg(days_since_previous_purchase) as avg_days_between_purchases,
        {{ cw_percentile_cont('days_since_previous_purchase', 0.5) }}
            as median_days_between_purchases
    from customer_days
    group by customer_id
),

combined as (
    select
        order_totals.*,
        coalesce(purchase_day_totals.purchase_days_count, 0) as purchase_days_count,
        purchase_day_totals.first_purchase_date,
        purchase_day_totals.last_purchase_date,
        coalesce(purchase_day_totals.repeat_revenue, 0) as repeat_revenue,
        purchase_day_totals.avg_days_between_purchases,
        purchase_day_totals.median_days_between_purchases,
        as_of.as_of_date
    from order_totals
    cross join as_of
    left join purchase_day_totals
        on order_totals.customer_id = purchase_day_totals.customer_id
),

final as (
    select
        customer_id,
        first_purchase_date,
        last_purchase_date,
        all_orders_count,
        orders_count,
        cancelled_orders_count,
        refunded_orders_count,
        purchase_days_count,
        case when purchase_days_count > 0 then purchase_days_count - 1 else 0 end as frequency,
        coalesce({{ cw_days_between('first_purchase_date', 'last_purchase_date') }}, 0)
            as recency_days,
        coalesce({{ cw_days_between('first_purchase_date', 'as_of_date') }}, 0) as tenure_days,
        {{ cw_days_between('last_purchase_date', 'as_of_date') }}
            as days_since_last_purchase,
        cast(revenue as decimal(18, 2)) as revenue,
        {{ cw_divide_money('revenue', 'orders_count') }} as average_order_value,
        coalesce(
            {{ cw_divide_money('repeat_revenue', 'purchase_days_count - 1') }},
            cast(0 as decimal(18, 2))
        ) as avg_repeat_purchase_day_value,
        cast(avg_days_between_purchases as double) as avg_days_between_purchases,
        cast(median_days_between_purchases as double) as median_days_between_purchases,
        {{ cw_add_days(
            'last_purchase_date',
            'cast(round(median_days_between_purchases) as ' ~ dbt.type_int() ~ ')'
        ) }} as next_purchase_due_date,
        cast(discount_amount as decimal(18, 2)) as discount_amount,
        cast(
            case
                when orders_count > 0
                    then cast(discounted_orders_count as double) / orders_count
            end
            as double
        ) as discounted_orders_share,
        {%- for days in [30, 90, 365] %}
            cast(spend_last_{{ days }}_days as decimal(18, 2)) as spend_last_{{ days }}_days,
            orders_last_{{ days }}_days,
        {%- endfor %}
        as_of_date
    from combined
)

select * from final
