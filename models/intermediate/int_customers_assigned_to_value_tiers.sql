{#-
    Value tier of every customer with RFM scores (every buyer). The rules are the rows of
    seeds/tiers/value_tier_rules.csv, tried in `priority` order: the first rule whose minimum
    recency, frequency and monetary scores and minimum RFM total are all met gives the tier.
    Keep a last rule with minimums of 1 (or a total of 3) so every buyer gets a tier; customers
    who never bought have no RFM scores and no value tier (their lifecycle stage is `prospect`).
-#}
with

rfm_scores as (select * from {{ ref('int_customers_scored_on_rfm') }}),

value_tier_rules as (select * from {{ ref('value_tier_rules') }}),

matching_rules as (
    select
        rfm_scores.customer_id,
        value_tier_rules.value_tier,
        value_tier_rules.value_tier_label,
        value_tier_rules.tier_rank,
        row_number() over (
            partition by rfm_scores.customer_id
            order by value_tier_rules.priority
        ) as match_order
    from rfm_scores
    inner join value_tier_rules
        on rfm_scores.recency_score >= value_tier_rules.min_recency_score
            and rfm_scores.frequency_score >= value_tier_rules.min_frequency_score
            and rfm_scores.monetary_score >= value_tier_rules.min_monetary_score
            and rfm_scores.rfm_total_score >= value_tier_rules.min_rfm_total
),

final as (
    select
        rfm_scores.customer_id,
        rfm_scores.recency_score,
        rfm_scores.frequency_score,
        rfm_scores.monetary_score,
        rfm_scores.rfm_total_score,
        rfm_scores.rfm_cell,
        matching_rules.value_tier,
        matching_rules.value_tier_label,
        matching_rules.tier_rank as value_tier_rank
    from rfm_scores
    left join matching_rules
        on rfm_scores.customer_id = matching_rules.customer_id
            and matching_rules.match_order = 1
)

select * from final
