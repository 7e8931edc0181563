{#-
    Every raw product row, typed, with the reason it cannot be trusted (null when it can).
    Latest delivery wins, as for orders (base_shop__orders): older rows of a product are
    superseded (staging.superseded_products). Incremental like base_shop__orders.
-#}
{%- set raw_columns, plan, raw_key = cw_shop_base_model('products', 'product_id') -%}

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
        {{ cw_reject_reason(required=['product_id']) }} as reject_reason
    from duplicates_marked
)

select * from final
