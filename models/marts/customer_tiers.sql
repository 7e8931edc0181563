{#-
    One row per customer known on the as-of date: RFM scores, value tier, lifecycle stage,
    membership level (with grace period and what is still needed for the next level),
    geographic, channel and needs segments, and the recommended marketing action.
    Every rule comes from a seed under seeds/tiers/ (docs/tiers.md says which); this model only
    puts the pieces together and picks the action:
    the marketing_strategies row for the customer's lifecycle stage and value tier, where a
    row with value_tier `any` applies when no row names the customer's tier.
-#}
with

features as (select * from {{ ref('customer_features') }}),

value_tiers as (select * from {{ ref('int_customers_assigned_to_value_tiers') }}),

lifecycle_stages as (select * from {{ ref('int_customers_assigned_to_lifecycle_stages') }}),

membership as (select * from {{ ref('int_customers_evaluated_for_membership_levels') }}),

marketing_strategies as (select * from {{ ref('marketing_strategies') }}),

segmented as (
    select
        features.customer_id,
        features.as_of_date,
        features.region,
        features.preferred_channel,
        features.is_omni_channel,
        features.needs_segment,
        features.has_purchased,
        lifecycle_stages.days_since_first_purchase,
        lifecycle_stages.days_since_last_purchase,
        lifecycle_stages.lifecycle_stage,
        value_tiers.recency_score,
        value_tiers.frequency_score,
        value_tiers.monetary_score,
        value_tiers.rfm_total_score,
        value_tiers.rfm_cell,
        value_tiers.value_tier,
        value_tiers.value_tier_label,
        value_tiers.value_tier_rank,
        membership.membership_level,
        membership.membership_level_rank,
        membership.qualified_membership_level,
        membership.is_in_grace_period,
        membership.membership_level_kept_until,
        membership.spend_12m,
        membership.orders_12m,
        membership.next_membership_level,
        membership.spend_to_next_level,
        membership.orders_to_next_level,
        membership.spend_to_keep_level,
        membership.orders_to_keep_level
    from features
    left join value_tiers using (customer_id)
    left join lifecycle_stages using (customer_id)
    left join membership using (customer_id)
),

strategy_matches as (
    select
        segmented.customer_id,
        marketing_strategies.recommended_action,
        marketing_strategies.action_description,
        marketing_strategies.is_win_back,
        row_number() over (
            partition by segmented.customer_id
            order by case when marketing_strategies.value_tier = 'any' then 1 else 0 end
        ) as match_order
    from segmented
    inner join marketing_strategies
        on segmented.lifecycle_stage = marketing_strategies.lifecycle_stage
            and (
                segmented.value_tier = marketing_strategies.value_tier
                or marketing_strategies.value_tier = 'any'
            )
),

final as (
    select
        {{ cw_as_text('segmented.customer_id') }} as customer_id,
        segmented.as_of_date,
        {{ cw_as_text('segmented.region') }} as region,
        {{ cw_as_text('segmented.preferred_channel') }} as preferred_channel,
        segmented.is_omni_channel,
        {{ cw_as_text('segmented.needs_segment') }} as needs_segment,
        segmented.has_purchased,
        cast(segmented.days_since_first_purchase as {{ dbt.type_int() }})
            as days_since_first_purchase,
        cast(segmented.days_since_last_purchase as {{ dbt.type_int() }})
            as days_since_last_purchase,
        cast(segmented.recency_score as {{ dbt.type_int() }}) as recency_score,
        cast(segmented.frequency_score as {{ dbt.type_int() }}) as frequency_score,
        cast(segmented.monetary_score as {{ dbt.type_int() }}) as monetary_score,
        cast(segmented.rfm_total_score as {{ dbt.type_int() }}) as rfm_total_score,
        {{ cw_as_text('segmented.rfm_cell') }} as rfm_cell,
        {{ cw_as_text('segmented.value_tier') }} as value_tier,
        {{ cw_as_text('segmented.value_tier_label') }} as value_tier_label,
        cast(segmented.value_tier_rank as {{ dbt.type_int() }}) as value_tier_rank,
        {{ cw_as_text('segmented.lifecycle_stage') }} as lifecycle_stage,
        {{ cw_as_text('segmented.membership_level') }} as membership_level,
        cast(segmented.membership_level_rank as {{ dbt.type_int() }}) as membership_level_rank,
        {{ cw_as_text('segmented.qualified_membership_level') }} as qualified_membership_level,
        segmented.is_in_grace_period,
        segmented.membership_level_kept_until,
        cast(segmented.spend_12m as decimal(18, 2)) as spend_12m,
        cast(segmented.orders_12m as {{ dbt.type_int() }}) as orders_12m,
        {{ cw_as_text('segmented.next_membership_level') }} as next_membership_level,
        cast(segmented.spend_to_next_level as decimal(18, 2)) as spend_to_next_level,
        cast(segmented.orders_to_next_level as {{ dbt.type_int() }}) as orders_to_next_level,
        cast(segmented.spend_to_keep_level as decimal(18, 2)) as spend_to_keep_level,
        cast(segmented.orders_to_keep_level as {{ dbt.type_int() }}) as orders_to_keep_level,
        {{ cw_as_text('strategy_matches.recommended_action') }} as recommended_action,
        {{ cw_as_text('strategy_matches.action_description') }} as action_description,
        coalesce(strategy_matches.is_win_back, false) as is_win_back_candidate,
        {{ cw_tiers_computed_at('segmented.as_of_date') }} as computed_at
    from segmented
    left join strategy_matches
        on segmented.customer_id = strategy_matches.customer_id
            and strategy_matches.match_order = 1
)

select * from final
