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
{{ config(
    unique_key=['source_file', 'source_row'],
    pre_hook="{{ cw_incremental_pre_hook('raw_rows') }}",
    post_hook="{{ cw_incremental_post_hook('raw_rows', 'order_items') }}",
) }}
{%- set raw_columns = ['order_id', 'product_id', 'quantity', 'unit_price'] -%}

{%- set plan = cw_incremental_plan('raw_rows') -%}
{%- set raw_key = cw_raw_dedup_key(blank_to_null('order_id')) -%}

-- depends_on: {{ source('shop', 'deliveries') }}
-- depends_on: {{ source('shop', 'erasure_requests') }}

with

accepted_orders as (
    select order_id from {{ ref('base_shop__orders') }}
    where reject_reason is null and not is_superseded
),

{%- if plan.mode == 'filter' %}

{{ cw_changed_deliveries('order_items', plan) }},

affected_keys as (
    {{ cw_keys_of_changed_deliveries('order_items', raw_key) }}
    union
    select built.dedup_key
    from {{ this }} as built
    left join accepted_orders
        on built.order_id = accepted_orders.order_id
    where built.is_order_accepted <> (accepted_orders.order_id is not null)
    union
    {{ cw_keys_of_erased_lines() }}
),
{%- endif %}

source as (
    select * from {{ source('shop', 'order_items') }}
    {%- if plan.mode == 'filter' %}
        where {{ raw_key }} in (select dedup_key from affected_keys)
    {%- endif %}
),

typed as (
    select
        _source_file as source_file,
        _source_row as source_row,
        _delivery as delivery,
        _file_sha256 as file_sha256,
        _load_error as load_error,
        _raw_line as raw_line,
        {{ raw_key }} as dedup_key,
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
        max(typed.delivery) over (partition by typed.dedup_key) as latest_delivery,
        typed.delivery
        < max(typed.delivery) over (partition by typed.dedup_key) as is_superseded,
        row_number() over (
            partition by typed.dedup_key, typed.delivery, typed.row_content
            order by typed.source_row
        ) as copy_number,
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
        case
            when is_superseded then null
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
