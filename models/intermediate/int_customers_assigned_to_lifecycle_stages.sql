{#-
    Lifecycle stage of every customer known on the as-of date.
    - `prospect`: no purchase (completed order) by the as-of date, whatever else they did.
    - Buyers: the rows of seeds/tiers/lifecycle_stage_thresholds.csv, tried in `priority` order;
      the first whose max_days_since_first_purchase and max_days_since_last_purchase (empty =
      no limit) are both met gives the stage. With the shipped thresholds: new (first purchase
      within 60 days), active (last purchase within 90 days), at_risk (within 180), silent
      (within 365), churned (longer ago).
    The days are the customer's own features, so every stage can be explained from them.
-#}
with

customers as (select * from {{ ref('int_customers_filtered_to_as_of_date') }}),

purchase_stats as (select * from {{ ref('int_orders_aggregated_to_customers') }}),

lifecycle_stage_thresholds as (select * from {{ ref('lifecycle_stage_thresholds') }}),

buyer_days as (
    select
        customer_id,
        {{ cw_days_between('first_purchase_date', 'as_of_date') }}
            as days_since_first_purchase,
        days_since_last_purchase
    from purchase_stats
    where purchase_days_count > 0
),

matching_stages as (
    select
        buyer_days.customer_id,
        lifecycle_stage_thresholds.lifecycle_stage,
        row_number() over (
            partition by buyer_days.customer_id
            order by lifecycle_stage_thresholds.priority
        ) as match_order
    from buyer_days
    inner join lifecycle_stage_thresholds
        on (
            lifecycle_stage_thresholds.max_days_since_first_purchase is null
            or buyer_days.days_since_first_purchase
            <= lifecycle_stage_thresholds.max_days_since_first_purchase
        )
        and (
            lifecycle_stage_thresholds.max_days_since_last_purchase is null
            or buyer_days.days_since_last_purchase
            <= lifecycle_stage_thresholds.max_days_since_last_purchase
        )
),

final as (
    select
        customers.customer_id,
        buyer_days.days_since_first_purchase,
        buyer_days.days_since_last_purchase,
        case
            when buyer_days.customer_id is null then 'prospect'
            else matching_stages.lifecycle_stage
        end as lifecycle_stage
    from customers
    left join buyer_days
        on customers.customer_id = buyer_days.customer_id
    left join matching_stages
        on customers.customer_id = matching_stages.customer_id
            and matching_stages.match_order = 1
)

select * from final
