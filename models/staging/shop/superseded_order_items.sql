{#-
    Raw order_items rows that a later delivery replaced: the same order (all its lines) arrived again
    in a delivery that sorts after theirs, and the latest delivery wins (base_shop__order_items).
    Not rejects but history, kept with their raw values, so every raw row is accounted for:
    raw = stg_shop__order_items + order_item_rejects + superseded_order_items.
-#}
with

checked as (
    select * from {{ ref('base_shop__order_items') }}
    where is_superseded
),

final as (
    select
        checked.source_file,
        checked.source_row,
        checked.delivery,
        checked.latest_delivery as superseded_by_delivery,
        checked.raw_order_id as order_id,
        checked.raw_product_id as product_id,
        checked.raw_quantity as quantity,
        checked.raw_unit_price as unit_price
    from checked
)

select * from final
