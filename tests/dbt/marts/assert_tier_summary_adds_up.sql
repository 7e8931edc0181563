{#- Each dimension of tier_summary covers every customer and all revenue of customer_features. -#}
with

summary as (select * from {{ ref('tier_summary') }}),

features as (select * from {{ ref('customer_features') }}),

feature_totals as (
    select
        count(*) as customers,
        coalesce(sum(revenue), 0) as revenue,
        coalesce(sum(orders_count), 0) as orders_count
    from features
),

dimension_totals as (
    select
        dimension,
        sum(customers) as customers,
        sum(revenue) as revenue,
        sum(orders_count) as orders_count,
        sum(customer_share) as customer_share,
        sum(revenue_share) as revenue_share
    from summary
    group by dimension
)

select
    dimension_totals.*,
    feature_totals.customers as expected_customers,
    feature_totals.revenue as expected_revenue
from dimension_totals
cross join feature_totals
where dimension_totals.customers <> feature_totals.customers
    or dimension_totals.revenue <> feature_totals.revenue
    or dimension_totals.orders_count <> feature_totals.orders_count
    or abs(dimension_totals.customer_share - 1) > 0.000001
    or (feature_totals.revenue > 0 and abs(dimension_totals.revenue_share - 1) > 0.000001)
