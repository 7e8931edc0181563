{#-
    Every change of a customer's value tier, lifecycle stage or membership level, from the tier
    history customer_tier_history: one row per customer, dimension and as-of date on which the
    value differs from the customer's previous recorded as-of date. Derived with window
    functions over the dates, so the order in which the dates were computed does not matter.
    - A first appearance is not a transition, nor is a customer's first value tier (it comes
      with the first purchase, which the lifecycle stage records as prospect -> new).
    - direction: upgrade / downgrade by the tier and level ranks of the seeds (stored in the
      history), `stage_change` for lifecycle stages.
    - reason_code / reason explain the change from the customer's scores and balances on the
      as-of date of the change.
-#}
with

history as (select * from {{ ref('customer_tier_history') }}),

history_with_previous as (
    select
        history.*,
        {%- for column in [
            'as_of_date',
            'value_tier',
            'value_tier_rank',
            'lifecycle_stage',
            'membership_level',
            'membership_level_rank',
        ] %}
            {{ cw_on_previous_as_of_date(column) }} as previous_{{ column }},
        {%- endfor %}
        {{ cw_on_previous_as_of_date('rfm_total_score') }} as previous_rfm_total_score
    from history
),

value_tier_changes as (
    select
        customer_id,
        'value_tier' as dimension,
        previous_value_tier as from_value,
        value_tier as to_value,
        case
            when value_tier_rank > previous_value_tier_rank then 'upgrade'
            else 'downgrade'
        end as direction,
        as_of_date as changed_on,
        previous_as_of_date,
        case
            when rfm_total_score > previous_rfm_total_score then 'rfm_score_rose'
            when rfm_total_score < previous_rfm_total_score then 'rfm_score_fell'
            else 'rfm_mix_changed'
        end as reason_code,
        'RFM scores ' || {{ cw_as_text('recency_score') }}
        || '/' || {{ cw_as_text('frequency_score') }}
        || '/' || {{ cw_as_text('monetary_score') }}
        || ' (total ' || {{ cw_as_text('rfm_total_score') }}
        || ', was ' || {{ cw_as_text('previous_rfm_total_score') }}
        || ') match the ' || value_tier || ' rule' as reason
    from history_with_previous
    where previous_value_tier is not null
        and value_tier is not null
        and value_tier <> previous_value_tier
),

lifecycle_stage_changes as (
    select
        customer_id,
        'lifecycle_stage' as dimension,
        previous_lifecycle_stage as from_value,
        lifecycle_stage as to_value,
        'stage_change' as direction,
        as_of_date as changed_on,
        previous_as_of_date,
        case
            when previous_lifecycle_stage = 'prospect' then 'first_purchase'
            when lifecycle_stage = 'prospect' then 'purchases_reversed'
            when previous_lifecycle_stage in ('at_risk', 'silent', 'churned')
                and lifecycle_stage in ('new', 'active') then 'reactivated'
            when previous_lifecycle_stage = 'new' and lifecycle_stage = 'active'
                then 'new_period_ended'
            else 'inactivity'
        end as reason_code,
        case
            when lifecycle_stage = 'prospect'
                then 'no completed purchase left by the as-of date: every order was cancelled or refunded'
            else
                'last purchase ' || {{ cw_as_text('days_since_last_purchase') }}
                || ' days and first purchase ' || {{ cw_as_text('days_since_first_purchase') }}
                || ' days before the as-of date'
        end as reason
    from history_with_previous
    where previous_lifecycle_stage is not null
        and lifecycle_stage <> previous_lifecycle_stage
),

membership_level_changes as (
    select
        customer_id,
        'membership_level' as dimension,
        previous_membership_level as from_value,
        membership_level as to_value,
        case
            when membership_level_rank > previous_membership_level_rank then 'upgrade'
            else 'downgrade'
        end as direction,
        as_of_date as changed_on,
        previous_as_of_date,
        case
            when membership_level_rank > previous_membership_level_rank
                then 'level_thresholds_met'
            else 'grace_period_ended'
        end as reason_code,
        case
            when membership_level_rank < previous_membership_level_rank
                then 'the ' || previous_membership_level || ' grace period is over; '
            when is_in_grace_period
                then 'met the ' || membership_level
                    || ' thresholds on a day within its grace period; '
            else 'met the ' || membership_level || ' thresholds; '
        end
        || '12-month spend ' || {{ cw_as_text('spend_12m') }}
        || ' in ' || {{ cw_as_text('orders_12m') }} || ' orders' as reason
    from history_with_previous
    where previous_membership_level is not null
        and membership_level <> previous_membership_level
),

all_changes as (
    select * from value_tier_changes
    union all
    select * from lifecycle_stage_changes
    union all
    select * from membership_level_changes
),

final as (
    select
        {{ cw_as_text(dbt.hash(dbt.concat([
            'customer_id', "'|'", 'dimension', "'|'", cw_as_text('changed_on')
        ]))) }} as transition_id,
        {{ cw_as_text('customer_id') }} as customer_id,
        {{ cw_as_text('dimension') }} as dimension,
        {{ cw_as_text('from_value') }} as from_value,
        {{ cw_as_text('to_value') }} as to_value,
        {{ cw_as_text('direction') }} as direction,
        changed_on,
        previous_as_of_date,
        {{ cw_as_text('reason_code') }} as reason_code,
        {{ cw_as_text('reason') }} as reason
    from all_changes
)

select * from final
