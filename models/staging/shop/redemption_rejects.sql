with

checked as (
    select * from {{ ref('base_shop__redemptions') }}
    where reject_reason is not null
),

final as (
    select
        source_file,
        source_row,
        reject_reason,
        load_error,
        raw_line,
        raw_redemption_id as redemption_id,
        raw_customer_id as customer_id,
        raw_redeemed_at as redeemed_at,
        raw_points as points
    from checked
)

select * from final
