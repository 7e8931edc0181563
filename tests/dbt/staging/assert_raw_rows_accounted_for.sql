{#- Nothing is lost: every raw row is accepted, in a rejects table, or superseded by a later
    delivery of the same key (history). Returns the sources where that does not hold. -#}
{% set splits = [
    ('orders', 'stg_shop__orders', 'order_rejects', 'superseded_orders'),
    ('customers', 'stg_shop__customers', 'customer_rejects', 'superseded_customers'),
    ('order_items', 'stg_shop__order_items', 'order_item_rejects', 'superseded_order_items'),
    ('products', 'stg_shop__products', 'product_rejects', 'superseded_products'),
    ('redemptions', 'stg_shop__redemptions', 'redemption_rejects', 'superseded_redemptions'),
    ('point_adjustments', 'stg_shop__point_adjustments', 'point_adjustment_rejects', none),
] %}

with

counts as (
    {% for source_name, accepted, rejected, superseded in splits %}
        select
            '{{ source_name }}' as source_name,
            (select count(*) from {{ source('shop', source_name) }}) as raw_rows,
            (select count(*) from {{ ref(accepted) }}) as accepted_rows,
            (select count(*) from {{ ref(rejected) }}) as rejected_rows,
            {% if superseded %}(select count(*) from {{ ref(superseded) }}){% else %}0{% endif %}
                as superseded_rows
        {% if not loop.last %}union all{% endif %}
    {% endfor %}
),

final as (
    select * from counts
    where raw_rows <> accepted_rows + rejected_rows + superseded_rows
)

select * from final
