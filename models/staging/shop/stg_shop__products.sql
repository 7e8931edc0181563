{% call cw_trusted_rows(ref('base_shop__products')) %}
        product_id,
        product_name,
        category
{%- endcall %}
