with

checked as (
    select * from {{ ref('base_shop__order_items') }}
    where reject_reason is not null
),

final as (
    select
        source_file,
        source_row,
        reject_reason,
        load_error,
        raw_line,
        raw_order_id as order_id,
        raw_product_id as product_id,
        raw_quantity as quantity,
        raw_unit_price as unit_price
    from checked
)

select * from final
