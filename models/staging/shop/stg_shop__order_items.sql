{% call cw_trusted_rows(ref('base_shop__order_items')) %}  -- noqa: LT02
        {{ dbt.concat(["order_id", "'-'", dbt.cast("line_number", api.Column.translate_type("string"))]) }}
            as order_item_id,
        order_id,
        product_id,
        quantity,
        unit_price,
        cast(quantity * unit_price as decimal(18, 2)) as line_amount
{%- endcall %}
