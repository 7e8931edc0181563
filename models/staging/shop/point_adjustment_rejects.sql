with

checked as (
    select * from {{ ref('base_shop__point_adjustments') }}
    where reject_reason is not null
),

final as (
    select
        source_file,
        source_row,
        reject_reason,
        load_error,
        raw_line,
        raw_adjustment_id as adjustment_id,
        raw_customer_id as customer_id,
        raw_points as points,
        raw_reason as reason,
        raw_adjusted_at as adjusted_at
    from checked
)

select * from final
