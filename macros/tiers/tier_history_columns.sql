{#-
    The columns of the tier history (marts.customer_tier_history) besides customer_id and
    as_of_date, in their order: the state (value tier, lifecycle stage, membership level) and the
    scores and balances that explain it. customer_tier_history selects them from customer_tiers,
    customer_tiers_history keeps them per version, customer_tier_transitions reads them.
-#}
{% macro cw_tier_history_columns() -%}
    {{ return([
        'value_tier',
        'value_tier_label',
        'value_tier_rank',
        'lifecycle_stage',
        'membership_level',
        'membership_level_rank',
        'recency_score',
        'frequency_score',
        'monetary_score',
        'rfm_total_score',
        'days_since_first_purchase',
        'days_since_last_purchase',
        'spend_12m',
        'orders_12m',
        'is_in_grace_period',
    ]) }}
{%- endmacro %}

{#- The dimensions whose change starts a new version / transition, in this order. -#}
{% macro cw_tier_dimensions() -%}
    {{ return(['value_tier', 'lifecycle_stage', 'membership_level']) }}
{%- endmacro %}

{#-
    `expr` on the customer's previous recorded as-of date of the tier history (null on the first):
    lag over customer_id, ordered by as_of_date.
-#}
{% macro cw_on_previous_as_of_date(expr) -%}
    lag({{ expr }}) over (partition by customer_id order by as_of_date)
{%- endmacro %}
