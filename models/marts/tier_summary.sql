{#-
    Customers, revenue, orders and NPS per segment of four dimensions: value tier, membership
    level, lifecycle stage and region. One row per dimension and segment; within a dimension
    every customer is in exactly one segment (value tier `not_scored` = never bought, region
    `unknown` = no region), so each dimension's customers and revenue add up to
    marts.customer_features (tests/dbt/marts/assert_tier_summary_adds_up.sql).
    NPS = % promoters - % detractors among the segment's customers with an NPS answer.
-#}
with

features as (select * from {{ ref('customer_features') }}),

tiers as (select * from {{ ref('customer_tiers') }}),

customer_segments as (
    select
        features.customer_id,
        features.as_of_date,
        features.revenue,
        features.orders_count,
        features.has_purchased,
        features.nps_category,
        coalesce(tiers.value_tier, 'not_scored') as value_tier,
        tiers.membership_level,
        tiers.lifecycle_stage,
        features.region
    from features
    inner join tiers
        on features.customer_id = tiers.customer_id
),

unpivoted as (
    {% for dimension in ['value_tier', 'membership_level', 'lifecycle_stage', 'region'] -%}
        {% if not loop.first -%}
            union all
        {% endif -%}
        select
            '{{ dimension }}' as dimension,
            {{ dimension }} as segment,
            customer_id,
            as_of_date,
            revenue,
            orders_count,
            has_purchased,
            nps_category
        from customer_segments
    {% endfor %}
),

segment_totals as (
    select
        dimension,
        segment,
        max(as_of_date) as as_of_date,
        count(*) as customers,
        sum(case when has_purchased then 1 else 0 end) as buyers,
        sum(revenue) as revenue,
        sum(orders_count) as orders_count,
        sum(case when nps_category is not null then 1 else 0 end) as nps_respondents,
        sum(case when nps_category = 'promoter' then 1 else 0 end) as promoters,
        sum(case when nps_category = 'detractor' then 1 else 0 end) as detractors
    from unpivoted
    group by dimension, segment
),

dimension_totals as (
    select
        dimension,
        sum(customers) as dimension_customers,
        sum(revenue) as dimension_revenue
    from segment_totals
    group by dimension
),

final as (
    select
        {{ cw_as_text(dbt.concat(['segment_totals.dimension', "':'", 'segment_totals.segment'])) }}
            as summary_key,
        {{ cw_as_text('segment_totals.dimension') }} as dimension,
        {{ cw_as_text('segment_totals.segment') }} as segment,
        segment_totals.as_of_date,
        cast(segment_totals.customers as {{ dbt.type_int() }}) as customers,
        cast(segment_totals.buyers as {{ dbt.type_int() }}) as buyers,
        cast(segment_totals.customers as double) / dimension_totals.dimension_customers
            as customer_share,
        cast(segment_totals.revenue as decimal(18, 2)) as revenue,
        case
            when dimension_totals.dimension_revenue > 0
                then cast(segment_totals.revenue as double)
                    / cast(dimension_totals.dimension_revenue as double)
            else cast(0 as double)
        end as revenue_share,
        cast(segment_totals.orders_count as {{ dbt.type_int() }}) as orders_count,
        {{ cw_divide_money('segment_totals.revenue', 'segment_totals.orders_count') }}
            as average_order_value,
        {{ cw_divide_money('segment_totals.revenue', 'segment_totals.buyers') }}
            as revenue_per_buyer,
        cast(segment_totals.nps_respondents as {{ dbt.type_int() }}) as nps_respondents,
        case
            when segment_totals.nps_respondents > 0
                then cast(100 * (segment_totals.promoters - segment_totals.detractors) as double)
                    / segment_totals.nps_respondents
        end as nps
    from segment_totals
    inner join dimension_totals
        on segment_totals.dimension = dimension_totals.dimension
)

select * from final
