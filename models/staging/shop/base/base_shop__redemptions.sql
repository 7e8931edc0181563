{#-
    Every raw redemption row, typed, with the reason it cannot be trusted (null when it can).
    Whether the customer HAD the points is decided by the loyalty asset, not here: an
    over-redemption lands in marts.loyalty_redemption_rejects with the balance at that moment.
    Without a redemption_id column the id is `<file>:<row>`.
    Latest delivery wins, as for orders (base_shop__orders), by redemption_id: older rows are
    superseded (staging.superseded_redemptions). Incremental like base_shop__orders; rows
    re-checked besides changed deliveries: redeemed after the previous run's start.
-#}
{{ config(
    unique_key=['source_file', 'source_row'],
    pre_hook="{{ cw_incremental_pre_hook('raw_rows') }}",
    post_hook="{{ cw_incremental_post_hook('raw_rows', 'redemptions') }}",
) }}
{%- set raw_columns = ['redemption_id', 'customer_id', 'redeemed_at', 'points'] -%}
{%- set earliest = "cast('" ~ var('earliest_plausible_date') ~ "' as timestamp)" -%}

{%- set plan = cw_incremental_plan('raw_rows') -%}
{%- set raw_key = cw_raw_dedup_key(blank_to_null('redemption_id')) -%}

-- depends_on: {{ source('shop', 'deliveries') }}
-- depends_on: {{ source('shop', 'erasure_requests') }}

with

{%- if plan.mode == 'filter' %}

{{ cw_changed_deliveries('redemptions', plan) }},

affected_keys as (
    {{ cw_keys_of_changed_deliveries('redemptions', raw_key) }}
    union
    select dedup_key from {{ this }}
    where redeemed_at > {{ cw_previous_run_started(plan) }}
    union
    {{ cw_keys_of_erased_lines() }}
),
{%- endif %}

source as (
    select * from {{ source('shop', 'redemptions') }}
    {%- if plan.mode == 'filter' %}
        where {{ raw_key }} in (select dedup_key from affected_keys)
    {%- endif %}
),

typed as (
    select
        _source_file as source_file,
        _source_row as source_row,
        _delivery as delivery,
        _file_sha256 as file_sha256,
        _load_error as load_error,
        _raw_line as raw_line,
        {{ raw_key }} as dedup_key,
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
        max(typed.delivery) over (partition by typed.dedup_key) as latest_delivery,
        typed.delivery
        < max(typed.delivery) over (partition by typed.dedup_key) as is_superseded,
        row_number() over (
            partition by typed.dedup_key, typed.delivery, typed.row_content
            order by typed.source_row
        ) as copy_number,
        min(typed.row_content) over (partition by typed.dedup_key, typed.delivery)
        <> max(typed.row_content) over (
            partition by typed.dedup_key, typed.delivery
        ) as has_conflicting_versions
    from typed
),

final as (
    select
        *,
        case
            when is_superseded then null
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
