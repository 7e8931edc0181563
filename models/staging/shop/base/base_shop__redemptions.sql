{#-
    Every raw redemption row, typed, with the reason it cannot be trusted (null when it can).
    Whether the customer HAD the points is decided by the loyalty asset, not here: an
    over-redemption lands in marts.loyalty_redemption_rejects with the balance at that moment.
    Without a redemption_id column the id is `<file>:<row>`.
-#}
{%- set raw_columns = ['redemption_id', 'customer_id', 'redeemed_at', 'points'] -%}
{%- set earliest = "cast('" ~ var('earliest_plausible_date') ~ "' as timestamp)" -%}

with

source as (
    select * from {{ source('shop', 'redemptions') }}
),

typed as (
    select
        _source_file as source_file,
        _source_row as source_row,
        _load_error as load_error,
        _raw_line as raw_line,
        redemption_id as raw_redemption_id,
        customer_id as raw_customer_id,
        redeemed_at as raw_redeemed_at,
        points as raw_points,
        coalesce(
            {{ blank_to_null('redemption_id') }},
            {{ dbt.concat(["_source_file", "':'", dbt.cast("_source_row", api.Column.translate_type("string"))]) }}
        ) as redemption_id,
        {{ blank_to_null('customer_id') }} as customer_id,
        {{ parse_timestamp_utc(blank_to_null('redeemed_at')) }} as redeemed_at,
        {{ parse_whole_number(blank_to_null('points')) }} as points,
        {{ field_problem(raw_columns) }} as field_problem,
        concat_ws(
            '|', coalesce(customer_id, ''), coalesce(redeemed_at, ''), coalesce(points, '')
        ) as row_content
    from source
),

duplicates_marked as (
    select
        typed.*,
        row_number() over (
            partition by redemption_id, row_content order by source_file, source_row
        ) as copy_number,
        min(row_content) over (partition by redemption_id)
        <> max(row_content) over (partition by redemption_id) as has_conflicting_versions
    from typed
),

final as (
    select
        *,
        case
            when load_error is not null then 'malformed_row'
            when field_problem is not null then field_problem
            when has_conflicting_versions then 'conflicting_duplicate'
            when copy_number > 1 then 'exact_duplicate'
            when customer_id is null then 'missing_customer_id'
            when {{ blank_to_null('raw_redeemed_at') }} is null then 'missing_redeemed_at'
            when redeemed_at is null then 'unparseable_redeemed_at'
            when redeemed_at > {{ run_started_utc() }} then 'future_redeemed_at'
            when redeemed_at < {{ earliest }} then 'implausible_redeemed_at'
            when points is null then 'unparseable_points'
            when points <= 0 then 'non_positive_points'
            when points > {{ var('max_redemption_points') }} then 'absurd_points'
        end as reject_reason
    from duplicates_marked
)

select * from final
