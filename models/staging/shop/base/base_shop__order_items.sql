{#- Every raw order line, typed, with the reason it cannot be trusted (null when it can). -#}
with

source as (
    select * from {{ source('shop', 'order_items') }}
),

accepted_orders as (
    select order_id from {{ ref('base_shop__orders') }}
    where reject_reason is null
),

typed as (
    select
        _source_file as source_file,
        _source_row as source_row,
        order_id as raw_order_id,
        product_id as raw_product_id,
        quantity as raw_quantity,
        unit_price as raw_unit_price,
        {{ blank_to_null('order_id') }} as order_id,
        {{ blank_to_null('product_id') }} as product_id,
        try_cast({{ blank_to_null('quantity') }} as bigint) as quantity,
        try_cast({{ blank_to_null('unit_price') }} as decimal(18, 2)) as unit_price,
        concat_ws(
            '|',
            coalesce(order_id, ''),
            coalesce(product_id, ''),
            coalesce(quantity, ''),
            coalesce(unit_price, '')
        ) as row_content
    from source
),

duplicates_marked as (
    select
        typed.*,
        accepted_orders.order_id is not null as is_order_accepted,
        row_number() over (
            partition by typed.row_content order by typed.source_file, typed.source_row
        ) as copy_number,
        row_number() over (
            partition by typed.order_id order by typed.source_file, typed.source_row
        ) as line_number
    from typed
    left join accepted_orders
        on typed.order_id = accepted_orders.order_id
),

final as (
    select
        *,
        case
            when order_id is null then 'missing_order_id'
            when product_id is null then 'missing_product_id'
            when copy_number > 1 then 'exact_duplicate'
            when not is_order_accepted then 'order_not_accepted'
            when quantity is null then 'unparseable_quantity'
            when quantity <= 0 then 'non_positive_quantity'
            when unit_price is null then 'unparseable_unit_price'
            when unit_price < 0 then 'negative_unit_price'
        end as reject_reason
    from duplicates_marked
)

select * from final
