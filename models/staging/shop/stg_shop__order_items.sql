with

checked as (
    select * from {{ ref('base_shop__order_items') }}
    where reject_reason is null and not is_superseded
),

final as (
    select
        {{ dbt.concat(["order_id", "'-'", dbt.cast("line_number", api.Column.translate_type("string"))]) }}
            as order_item_id,
        order_id,
        product_id,
        quantity,
        unit_price,
        cast(quantity * unit_price as decimal(18, 2)) as line_amount,
        source_file,
        source_row
    from checked
)

select * from final
