{#- Every reject reason in a rejects table is explained, for its source, in
    seeds/reject_reasons.csv (description and what to do). Returns the undocumented ones. -#}
{% set rejects = [
    ('orders', 'order_rejects'),
    ('customers', 'customer_rejects'),
    ('order_items', 'order_item_rejects'),
    ('products', 'product_rejects'),
    ('redemptions', 'redemption_rejects'),
] %}

with

documented as (
    select
        source as source_name,
        reject_reason
    from {{ ref('reject_reasons') }}
),

given as (
    {% for source_name, rejected in rejects %}
        select distinct
            '{{ source_name }}' as source_name,
            reject_reason
        from {{ ref(rejected) }}
        {% if not loop.last %}union all{% endif %}
    {% endfor %}
),

final as (
    select given.*
    from given
    left join documented
        on given.source_name = documented.source_name
            and given.reject_reason = documented.reject_reason
    where documented.reject_reason is null
)

select * from final
