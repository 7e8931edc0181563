{#-
    Every raw redemption row, typed, with the reason it cannot be trusted (null when it can).
    Whether the customer HAD the points is decided by the loyalty asset, not here: an
    over-redemption lands in marts.loyalty_redemption_rejects with the balance at that moment.
    Without a redemption_id column the id is `<file>:<row>`.
    Latest delivery wins, as for orders (base_shop__orders), by redemption_id: older rows are
    superseded (staging.superseded_redemptions). Incremental like base_shop__orders; rows
    re-checked besides changed deliveries: redeemed after the previous run's start.
-#}
{%- set raw_columns, plan, raw_key = cw_shop_base_model('redemptions', 'redemption_id') -%}

with

{{ cw_incremental_source('redemptions', plan, raw_key, after_previous_run=['redeemed_at']) }},

typed as (
    select
        {{ cw_raw_row_columns(raw_columns, raw_key) }},
        coalesce(
            {{ blank_to_null('redemption_id') }},
            {{ dbt.concat(["_source_file", "':'", dbt.cast("_source_row", api.Column.translate_type("string"))]) }}
        ) as redemption_id,
        {{ blank_to_null('customer_id') }} as customer_id,
        {{ parse_timestamp_utc(blank_to_null('redeemed_at')) }} as redeemed_at,
        {{ parse_whole_number(blank_to_null('points')) }} as points,
        {{ field_problem(raw_columns) }} as field_problem,
        {{ cw_row_content(raw_columns, except_column='redemption_id') }} as row_content
    from source
),

{{ cw_duplicates_marked('typed') }},

final as (
    select
        *,
        {% call cw_reject_reason() %}
            when customer_id is null then 'missing_customer_id'
            {{ cw_timestamp_reject_reasons('redeemed_at') }}
            when points is null then 'unparseable_points'
            when points <= 0 then 'non_positive_points'
            when points > {{ var('max_redemption_points') }} then 'absurd_points'
        {%- endcall %} as reject_reason
    from duplicates_marked
)

select * from final
