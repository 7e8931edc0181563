{#-
    Every raw product row, typed, with the reason it cannot be trusted (null when it can).
    Latest delivery wins, as for orders (base_shop__orders): older rows of a product are
    superseded (staging.superseded_products). Incremental like base_shop__orders.
-#}
{{ config(
    unique_key=['source_file', 'source_row'],
    pre_hook="{{ cw_incremental_pre_hook('raw_rows') }}",
    post_hook="{{ cw_incremental_post_hook('raw_rows', 'products') }}",
) }}
{%- set raw_columns = ['product_id', 'product_name', 'category'] -%}

{%- set plan = cw_incremental_plan('raw_rows') -%}
{%- set raw_key = cw_raw_dedup_key(blank_to_null('product_id')) -%}

-- depends_on: {{ source('shop', 'deliveries') }}
-- depends_on: {{ source('shop', 'erasure_requests') }}

with

{%- if plan.mode == 'filter' %}

{{ cw_changed_deliveries('products', plan) }},

affected_keys as (
    {{ cw_keys_of_changed_deliveries('products', raw_key) }}
    union
    {{ cw_keys_of_erased_lines() }}
),
{%- endif %}

source as (
    select * from {{ source('shop', 'products') }}
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
        product_id as raw_product_id,
        product_name as raw_product_name,
        category as raw_category,
        {{ blank_to_null('product_id') }} as product_id,
        {{ blank_to_null('product_name') }} as product_name,
        coalesce(lower({{ blank_to_null('category') }}), 'uncategorized') as category,
        {{ field_problem(raw_columns) }} as field_problem,
        concat_ws('|', coalesce(product_name, ''), coalesce(category, '')) as row_content
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
            when product_id is null then 'missing_product_id'
            when has_conflicting_versions then 'conflicting_duplicate'
            when copy_number > 1 then 'exact_duplicate'
        end as reject_reason
    from duplicates_marked
)

select * from final
