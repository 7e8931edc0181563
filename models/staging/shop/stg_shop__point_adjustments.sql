with

checked as (
    select * from {{ ref('base_shop__point_adjustments') }}
    where reject_reason is null
),

final as (
    select
        adjustment_id,
        customer_id,
        adjusted_at,
        cast(adjusted_at as date) as adjusted_date,
        points,
        reason,
        source_file,
        source_row
    from checked
)

select * from final
