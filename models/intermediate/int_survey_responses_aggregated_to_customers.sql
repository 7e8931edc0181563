{#-
    What each customer told us in surveys submitted by the as-of date:
    - avg_satisfaction_score: mean of their satisfaction answers (1-5);
    - latest_nps_score / nps_category: their most recent recommendation score and its category
      from seeds/tiers/nps_categories.csv (promoter / passive / detractor);
    - primary_need_tag / needs_segment: the need they mentioned in the most responses, ties
      broken by the priority in seeds/tiers/needs_segments.csv; customers who answered but named
      no known need get `no_stated_need`. Tags are matched as whole pipe-separated items with a
      `like`, so the same SQL runs on engines without list functions.
-#}
with

responses as (select * from {{ ref('stg_surveys__responses') }}),

nps_categories as (select * from {{ ref('nps_categories') }}),

needs_segments as (select * from {{ ref('needs_segments') }}),

responses_as_of as (
    select * from responses
    where submitted_date <= {{ as_of_date() }}
),

response_totals as (
    select
        customer_id,
        count(*) as survey_responses_count,
        avg(satisfaction_score) as avg_satisfaction_score,
        max(submitted_date) as last_survey_date
    from responses_as_of
    group by customer_id
),

nps_ranked as (
    select
        customer_id,
        nps_score,
        row_number() over (
            partition by customer_id
            order by submitted_at desc, response_id desc
        ) as response_rank
    from responses_as_of
    where nps_score is not null
),

latest_nps as (
    select
        nps_ranked.customer_id,
        nps_ranked.nps_score as latest_nps_score,
        nps_categories.nps_category
    from nps_ranked
    left join nps_categories
        on nps_ranked.nps_score >= nps_categories.min_score
            and nps_ranked.nps_score <= nps_categories.max_score
    where nps_ranked.response_rank = 1
),

need_mentions as (
    select
        responses_as_of.customer_id,
        needs_segments.need_tag,
        needs_segments.needs_segment,
        needs_segments.priority,
        count(*) as mentions
    from responses_as_of
    inner join needs_segments
        on ('|' || responses_as_of.need_tags || '|')
            like ('%|' || needs_segments.need_tag || '|%')
    group by
        responses_as_of.customer_id,
        needs_segments.need_tag,
        needs_segments.needs_segment,
        needs_segments.priority
),

need_ranked as (
    select
        customer_id,
        need_tag,
        needs_segment,
        row_number() over (
            partition by customer_id
            order by mentions desc, priority asc, need_tag asc
        ) as need_rank
    from need_mentions
),

final as (
    select
        response_totals.customer_id,
        response_totals.survey_responses_count,
        cast(response_totals.avg_satisfaction_score as double) as avg_satisfaction_score,
        response_totals.last_survey_date,
        latest_nps.latest_nps_score,
        latest_nps.nps_category,
        need_ranked.need_tag as primary_need_tag,
        coalesce(need_ranked.needs_segment, 'no_stated_need') as needs_segment
    from response_totals
    left join latest_nps
        on response_totals.customer_id = latest_nps.customer_id
    left join need_ranked
        on response_totals.customer_id = need_ranked.customer_id
            and need_ranked.need_rank = 1
)

select * from final
