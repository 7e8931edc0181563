{#- Every raw product row, typed, with the reason it cannot be trusted (null when it can). -#}
{%- set raw_columns = ['product_id', 'product_name', 'category'] -%}

with

source as (
    select * from {{ source('shop', 'products') }}
),

typed as (
    select
        _source_file as source_file,
        _source_row as source_row,
        _load_error as load_error,
        _raw_line as raw_line,
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
        row_number() over (
            partition by product_id, row_content order by source_file, source_row
        ) as copy_number,
        min(row_content) over (partition by product_id)
        <> max(row_content) over (partition by product_id) as has_conflicting_versions
    from typed
),

final as (
    select
        *,
        case
            when load_error is not null then 'malformed_row'
            when field_problem is not null then field_problem
            when product_id is null then 'missing_product_id'
            when has_conflicting_versions then 'conflicting_duplicate'
            when copy_number > 1 then 'exact_duplicate'
        end as reject_reason
    from duplicates_marked
)

select * from final
