{#- Nothing is lost: every raw row is either accepted or in a rejects table. Returns the
    sources where that does not hold. -#}
{% set pairs = [
    ('orders', 'stg_shop__orders', 'order_rejects'),
    ('customers', 'stg_shop__customers', 'customer_rejects'),
    ('order_items', 'stg_shop__order_items', 'order_item_rejects'),
    ('products', 'stg_shop__products', 'product_rejects'),
    ('redemptions', 'stg_shop__redemptions', 'redemption_rejects'),
    ('point_adjustments', 'stg_shop__point_adjustments', 'point_adjustment_rejects'),
] %}

with

counts as (
    {% for source_name, accepted, rejected in pairs %}
        select
            '{{ source_name }}' as source_name,
            (select count(*) from {{ source('shop', source_name) }}) as raw_rows,
            (select count(*) from {{ ref(accepted) }}) as accepted_rows,
            (select count(*) from {{ ref(rejected) }}) as rejected_rows
        {% if not loop.last %}union all{% endif %}
    {% endfor %}
),

final as (
    select * from counts
    where raw_rows <> accepted_rows + rejected_rows
)

select * from final
