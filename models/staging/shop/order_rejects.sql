with

checked as (
    select * from {{ ref('base_shop__orders') }}
    where reject_reason is not null
),

final as (
    select
        source_file,
        source_row,
        reject_reason,
        load_error,
        raw_line,
        raw_order_id as order_id,
        raw_customer_id as customer_id,
        raw_ordered_at as ordered_at,
        raw_amount as amount,
        raw_currency as currency,
        raw_channel as channel,
        raw_status as status,
        raw_status_changed_at as status_changed_at,
        raw_discount_amount as discount_amount
    from checked
)

select * from final
