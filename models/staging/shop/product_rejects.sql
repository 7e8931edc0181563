with

checked as (
    select * from {{ ref('base_shop__products') }}
    where reject_reason is not null
),

final as (
    select
        source_file,
        source_row,
        reject_reason,
        load_error,
        raw_line,
        raw_product_id as product_id,
        raw_product_name as product_name,
        raw_category as category
    from checked
)

select * from final
