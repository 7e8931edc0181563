with

checked as (
    select * from {{ ref('base_shop__products') }}
    where reject_reason is null and not is_superseded
),

final as (
    select
        product_id,
        product_name,
        category,
        source_file,
        source_row
    from checked
)

select * from final
