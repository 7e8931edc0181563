{#-
    Raw redemptions rows that a later delivery replaced: the same redemption arrived again
    in a delivery that sorts after theirs, and the latest delivery wins (base_shop__redemptions).
    Not rejects but history, kept with their raw values, so every raw row is accounted for:
    raw = stg_shop__redemptions + redemption_rejects + superseded_redemptions.
-#}
with

checked as (
    select * from {{ ref('base_shop__redemptions') }}
    where is_superseded
),

final as (
    select
        checked.source_file,
        checked.source_row,
        checked.delivery,
        checked.latest_delivery as superseded_by_delivery,
        checked.raw_redemption_id as redemption_id,
        checked.raw_customer_id as customer_id,
        checked.raw_redeemed_at as redeemed_at,
        checked.raw_points as points
    from checked
)

select * from final
