{#-
    Every raw point adjustment row, typed, with the reason it cannot be trusted (null when it
    can). Adjustments are entered by hand, so each needs its own id (the ledger entry
    `adjust:<adjustment_id>` is keyed by it, and a re-export must not post it twice) and a
    reason code from seeds/point_adjustment_reasons.csv (a code, not free text: the reason
    travels into marts.loyalty_points_ledger, which must hold no personal data). Whether the
    customer had the points to take is decided by the loyalty asset, not here.
    A plain table rebuilt each run, not incremental like the other base models: the file is
    short and typed by hand. With deliveries (point_adjustments/<date>.csv), every delivered
    row counts; the same adjustment_id delivered twice with the same content is an
    exact_duplicate, with other content a conflicting_duplicate (never a silent overwrite of
    points already posted).
-#}
{{ config(materialized='table') }}
{%- set raw_columns = cw_shop_raw_columns('point_adjustments') -%}

with

source as (select * from {{ source('shop', 'point_adjustments') }}),

reasons as (select * from {{ ref('point_adjustment_reasons') }}),

typed as (
    select
        {{ cw_raw_row_columns(raw_columns) }},
        {{ blank_to_null('adjustment_id') }} as adjustment_id,
        {{ blank_to_null('customer_id') }} as customer_id,
        {{ parse_whole_number(blank_to_null('points')) }} as points,
        lower({{ blank_to_null('reason') }}) as reason,
        {{ parse_timestamp_utc(blank_to_null('adjusted_at')) }} as adjusted_at,
        {{ field_problem(raw_columns) }} as field_problem,
        {{ cw_row_content(raw_columns, except_column='adjustment_id') }} as row_content
    from source
),

duplicates_marked as (
    select
        typed.*,
        reasons.reason is not null as is_known_reason,
        {{ cw_duplicate_columns(
            'typed', partition_by=['adjustment_id'], order_by=['source_file', 'source_row']
        ) }}
    from typed
    left join reasons
        on typed.reason = reasons.reason
),

final as (
    select
        *,
        {% call cw_reject_reason(required=['adjustment_id'], latest_delivery_wins=false) %}
            when customer_id is null then 'missing_customer_id'
            {{ cw_timestamp_reject_reasons('adjusted_at') }}
            when points is null then 'unparseable_points'
            when points = 0 then 'zero_points'
            when abs(points) > {{ var('max_adjustment_points') }} then 'absurd_points'
            when reason is null then 'missing_reason'
            when not is_known_reason then 'unknown_reason'
        {%- endcall %} as reject_reason
    from duplicates_marked
)

select * from final
