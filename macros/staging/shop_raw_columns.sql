{#-
    The columns of each shop export, in the order of its contract (docs/raw-data.md): the one
    list per entity that its base model types (raw_<column>, field_problem, row content) and
    that its *_rejects and superseded_* models give back under the export's own names.
-#}
{% macro cw_shop_raw_columns(entity) -%}
    {%- set columns = {
        'orders': [
            'order_id', 'customer_id', 'ordered_at', 'amount', 'currency', 'channel', 'status',
            'status_changed_at', 'discount_amount',
        ],
        'customers': [
            'customer_id', 'signed_up_at', 'birth_date', 'gender', 'country', 'province', 'city',
            'email', 'phone', 'full_name', 'acquisition_channel', 'marketing_consent',
        ],
        'order_items': ['order_id', 'product_id', 'quantity', 'unit_price'],
        'products': ['product_id', 'product_name', 'category'],
        'redemptions': ['redemption_id', 'customer_id', 'redeemed_at', 'points'],
        'point_adjustments': ['adjustment_id', 'customer_id', 'points', 'reason', 'adjusted_at'],
    } -%}
    {%- if entity not in columns -%}
        {{ exceptions.raise_compiler_error("cw_shop_raw_columns: no shop export '" ~ entity ~ "'") }}
    {%- endif -%}
    {{ return(columns[entity]) }}
{%- endmacro %}
