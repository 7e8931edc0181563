{#-
    Every raw order line, typed, with the reason it cannot be trusted (null when it can).
    Quantity and unit price are bounded (vars max_item_quantity, max_order_amount) before they
    are multiplied, so a line amount always fits decimal(18, 2).
    Latest delivery wins per order: the lines of an order in its latest delivery of order_items
    are its lines; lines of that order in older deliveries are superseded
    (staging.superseded_order_items). Line numbers count the lines of that delivery.
    Incremental like base_shop__orders; the lines of an order are also taken again when the
    order's own acceptance changed (is_order_accepted).
-#}
{%- set raw_columns, plan, raw_key = cw_shop_base_model('order_items', 'order_id') -%}

with

accepted_orders as (
    select order_id from {{ ref('base_shop__orders') }}
    where reject_reason is null and not is_superseded
),

{% call cw_incremental_source('order_items', plan, raw_key) %}
    select built.dedup_key
    from {{ this }} as built
    left join accepted_orders
        on built.order_id = accepted_orders.order_id
    where built.is_order_accepted <> (accepted_orders.order_id is not null)
{%- endcall %},

typed as (
    select
        {{ cw_raw_row_columns(raw_columns, raw_key) }},
        {{ blank_to_null('order_id') }} as order_id,
        {{ blank_to_null('product_id') }} as product_id,
        {{ parse_whole_number(blank_to_null('quantity')) }} as quantity,
        {{ number_problem(blank_to_null('unit_price')) }} as unit_price_problem,
        {{ plain_number_as_double(blank_to_null('unit_price')) }} as unit_price_as_double,
        {{ parse_money(blank_to_null('unit_price'), var('max_order_amount')) }} as unit_price,
        {{ field_problem(raw_columns) }} as field_problem,
        {{ cw_row_content(raw_columns) }} as row_content
    from source
),

duplicates_marked as (
    select
        typed.*,
        accepted_orders.order_id is not null as is_order_accepted,
        {{ cw_latest_delivery_columns('typed') }},
        {{ cw_duplicate_columns('typed', conflicts=false) }},
        row_number() over (
            partition by typed.dedup_key, typed.delivery order by typed.source_row
        ) as line_number
    from typed
    left join accepted_orders
        on typed.order_id = accepted_orders.order_id
),

final as (
    select
        *,
        {% call cw_reject_reason(required=['order_id', 'product_id'], conflicts=false) %}
            when not is_order_accepted then 'order_not_accepted'
            when quantity is null then 'unparseable_quantity'
            when quantity <= 0 then 'non_positive_quantity'
            when quantity > {{ var('max_item_quantity') }} then 'absurd_quantity'
            when unit_price_problem is not null then 'unparseable_unit_price'
            when unit_price_as_double < 0 then 'negative_unit_price'
            when unit_price is null then 'absurd_unit_price'
        {%- endcall %} as reject_reason
    from duplicates_marked
)

select * from final
