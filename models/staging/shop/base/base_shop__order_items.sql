{#-
    Every raw order line, typed, with the reason it cannot be trusted (null when it can).
    Quantity and unit price are bounded (vars max_item_quantity, max_order_amount) before they
    are multiplied, so a line amount always fits decimal(18, 2).
-#}
{%- set raw_columns = ['order_id', 'product_id', 'quantity', 'unit_price'] -%}

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
        _load_error as load_error,
        _raw_line as raw_line,
        order_id as raw_order_id,
        product_id as raw_product_id,
        quantity as raw_quantity,
        unit_price as raw_unit_price,
        {{ blank_to_null('order_id') }} as order_id,
        {{ blank_to_null('product_id') }} as product_id,
        {{ parse_whole_number(blank_to_null('quantity')) }} as quantity,
        {{ number_problem(blank_to_null('unit_price')) }} as unit_price_problem,
        {{ plain_number_as_double(blank_to_null('unit_price')) }} as unit_price_as_double,
        {{ parse_money(blank_to_null('unit_price'), var('max_order_amount')) }} as unit_price,
        {{ field_problem(raw_columns) }} as field_problem,
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
            when load_error is not null then 'malformed_row'
            when field_problem is not null then field_problem
            when order_id is null then 'missing_order_id'
            when product_id is null then 'missing_product_id'
            when copy_number > 1 then 'exact_duplicate'
            when not is_order_accepted then 'order_not_accepted'
            when quantity is null then 'unparseable_quantity'
            when quantity <= 0 then 'non_positive_quantity'
            when quantity > {{ var('max_item_quantity') }} then 'absurd_quantity'
            when unit_price_problem is not null then 'unparseable_unit_price'
            when unit_price_as_double < 0 then 'negative_unit_price'
            when unit_price is null then 'absurd_unit_price'
        end as reject_reason
    from duplicates_marked
)

select * from final
