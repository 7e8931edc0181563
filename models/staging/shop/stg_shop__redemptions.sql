with

checked as (
    select * from {{ ref('base_shop__redemptions') }}
    where reject_reason is null and not is_superseded
),

final as (
    select
        redemption_id,
        customer_id,
        redeemed_at,
        cast(redeemed_at as date) as redeemed_date,
        points,
        source_file,
        source_row
    from checked
)

select * from final
