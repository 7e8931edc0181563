{#-
    Raw orders rows that a later delivery replaced: the same order arrived again
    in a delivery that sorts after theirs, and the latest delivery wins (base_shop__orders).
    Not rejects but history, kept with their raw values, so every raw row is accounted for:
    raw = stg_shop__orders + order_rejects + superseded_orders.
-#}
with

checked as (
    select * from {{ ref('base_shop__orders') }}
    where is_superseded
),

final as (
    select
        checked.source_file,
        checked.source_row,
        checked.delivery,
        checked.latest_delivery as superseded_by_delivery,
        checked.raw_order_id as order_id,
        checked.raw_customer_id as customer_id,
        checked.raw_ordered_at as ordered_at,
        checked.raw_amount as amount,
        checked.raw_currency as currency,
        checked.raw_channel as channel,
        checked.raw_status as status,
        checked.raw_status_changed_at as status_changed_at,
        checked.raw_discount_amount as discount_amount
    from checked
)

select * from final
