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
{%- set raw_columns = cw_shop_raw_columns('products') -%}
{%- set plan = cw_incremental_plan('raw_rows') -%}
{%- set raw_key = cw_raw_dedup_key(blank_to_null('product_id')) -%}

with

{{ cw_incremental_source('products', plan, raw_key) }},

typed as (
    select
        {{ cw_raw_row_columns(raw_columns, raw_key) }},
        {{ blank_to_null('product_id') }} as product_id,
        {{ blank_to_null('product_name') }} as product_name,
        coalesce(lower({{ blank_to_null('category') }}), 'uncategorized') as category,
        {{ field_problem(raw_columns) }} as field_problem,
        {{ cw_row_content(raw_columns, except_column='product_id') }} as row_content
    from source
),

{{ cw_duplicates_marked('typed') }},

final as (
    select
        *,
        {% call cw_reject_reason() %}
            when product_id is null then 'missing_product_id'
            when has_conflicting_versions then 'conflicting_duplicate'
            when copy_number > 1 then 'exact_duplicate'
        {%- endcall %} as reject_reason
    from duplicates_marked
)

select * from final
