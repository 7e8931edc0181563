{#-
    Raw products rows that a later delivery replaced: the same product arrived again
    in a delivery that sorts after theirs, and the latest delivery wins (base_shop__products).
    Not rejects but history, kept with their raw values, so every raw row is accounted for:
    raw = stg_shop__products + product_rejects + superseded_products.
-#}
with

checked as (
    select * from {{ ref('base_shop__products') }}
    where is_superseded
),

final as (
    select
        checked.source_file,
        checked.source_row,
        checked.delivery,
        checked.latest_delivery as superseded_by_delivery,
        checked.raw_product_id as product_id,
        checked.raw_product_name as product_name,
        checked.raw_category as category
    from checked
)

select * from final
