{#-
    One row per customer known on the as-of date: who they are (region, no personal data), how
    they buy, and what they told us. Customers who registered but never bought are here with
    zero counts. Definitions in docs/tiers.md and int_orders_aggregated_to_customers.
-#}
{%- set channels = var('channels') + ['other'] %}
with

customers as (select * from {{ ref('int_customers_filtered_to_as_of_date') }}),

purchase_stats as (select * from {{ ref('int_orders_aggregated_to_customers') }}),

channel_mix as (select * from {{ ref('int_orders_pivoted_to_customer_channels') }}),

customer_categories as (select * from {{ ref('int_order_items_aggregated_to_customer_categories') }}),

survey_answers as (select * from {{ ref('int_survey_responses_aggregated_to_customers') }}),

age_bands as (select * from {{ ref('int_customers_assigned_to_age_bands') }}),

favourite_categories as (
    select
        customer_id,
        category as favourite_category
    from customer_categories
    where category_rank = 1
),

final as (
    select
        {{ cw_as_text('customers.customer_id') }} as customer_id,
        customers.as_of_date,
        customers.has_customer_record,
        customers.signed_up_date,
        {{ cw_as_text('customers.country') }} as country,
        {{ cw_as_text('customers.province') }} as province,
        {{ cw_as_text('customers.city') }} as city,
        {{ cw_as_text("coalesce(customers.region, 'unknown')") }} as region,
        {{ cw_as_text('age_bands.age_band') }} as age_band,
        {{ cw_as_text('customers.acquisition_channel') }} as acquisition_channel,
        coalesce(purchase_stats.purchase_days_count, 0) > 0 as has_purchased,
        purchase_stats.first_purchase_date,
        purchase_stats.last_purchase_date,
        cast(coalesce(purchase_stats.orders_count, 0) as {{ dbt.type_int() }}) as orders_count,
        cast(coalesce(purchase_stats.cancelled_orders_count, 0) as {{ dbt.type_int() }})
            as cancelled_orders_count,
        cast(coalesce(purchase_stats.refunded_orders_count, 0) as {{ dbt.type_int() }})
            as refunded_orders_count,
        cast(coalesce(purchase_stats.purchase_days_count, 0) as {{ dbt.type_int() }})
            as purchase_days_count,
        cast(coalesce(purchase_stats.frequency, 0) as {{ dbt.type_int() }}) as frequency,
        cast(coalesce(purchase_stats.recency_days, 0) as {{ dbt.type_int() }}) as recency_days,
        cast(coalesce(purchase_stats.tenure_days, 0) as {{ dbt.type_int() }}) as tenure_days,
        cast(purchase_stats.days_since_last_purchase as {{ dbt.type_int() }})
            as days_since_last_purchase,
        cast(coalesce(purchase_stats.revenue, 0) as decimal(18, 2)) as revenue,
        cast(purchase_stats.average_order_value as decimal(18, 2)) as average_order_value,
        cast(coalesce(purchase_stats.avg_repeat_purchase_day_value, 0) as decimal(18, 2))
            as avg_repeat_purchase_day_value,
        cast(purchase_stats.avg_days_between_purchases as double) as avg_days_between_purchases,
        cast(purchase_stats.median_days_between_purchases as double)
            as median_days_between_purchases,
        purchase_stats.next_purchase_due_date,
        {%- for days in [30, 90, 365] %}
            cast(coalesce(purchase_stats.spend_last_{{ days }}_days, 0) as decimal(18, 2))
                as spend_last_{{ days }}_days,
            cast(coalesce(purchase_stats.orders_last_{{ days }}_days, 0) as {{ dbt.type_int() }})
                as orders_last_{{ days }}_days,
        {%- endfor %}
        cast(coalesce(purchase_stats.discount_amount, 0) as decimal(18, 2)) as discount_amount,
        cast(purchase_stats.discounted_orders_share as double) as discounted_orders_share,
        {{ cw_as_text('channel_mix.preferred_channel') }} as preferred_channel,
        cast(coalesce(channel_mix.channels_count, 0) as {{ dbt.type_int() }}) as channels_count,
        coalesce(channel_mix.is_omni_channel, false) as is_omni_channel,
        {%- for channel in channels %}
            cast(channel_mix.{{ channel }}_orders_share as double) as {{ channel }}_orders_share,
        {%- endfor %}
        {{ cw_as_text('favourite_categories.favourite_category') }} as favourite_category,
        cast(coalesce(survey_answers.survey_responses_count, 0) as {{ dbt.type_int() }})
            as survey_responses_count,
        cast(survey_answers.avg_satisfaction_score as double) as avg_satisfaction_score,
        cast(survey_answers.latest_nps_score as {{ dbt.type_int() }}) as latest_nps_score,
        {{ cw_as_text('survey_answers.nps_category') }} as nps_category,
        {{ cw_as_text("coalesce(survey_answers.needs_segment, 'unknown')") }} as needs_segment
    from customers
    left join purchase_stats using (customer_id)
    left join channel_mix using (customer_id)
    left join favourite_categories using (customer_id)
    left join survey_answers using (customer_id)
    left join age_bands using (customer_id)
)

select * from final
