{#-
    What every incremental base model (models/staging/shop/base) starts with, for the shop
    export `entity` whose latest delivery wins on `key_column`: its config (one row per raw
    row, unique key source_file, source_row; the hooks that keep the incremental state of the
    raw rows, macros/incremental) and, returned as a list to unpack,
    [raw_columns (cw_shop_raw_columns), plan (cw_incremental_plan('raw_rows')), raw_key (SQL of
    the key over the raw table, cw_raw_dedup_key)]:

        {%- set raw_columns, plan, raw_key = cw_shop_base_model('orders', 'order_id') -%}
-#}
{% macro cw_shop_base_model(entity, key_column) -%}
    {{ config(
        unique_key=['source_file', 'source_row'],
        pre_hook="{{ cw_incremental_pre_hook('raw_rows') }}",
        post_hook="{{ cw_incremental_post_hook('raw_rows', '" ~ entity ~ "') }}",
    ) }}
    {{ return([
        cw_shop_raw_columns(entity),
        cw_incremental_plan('raw_rows'),
        cw_raw_dedup_key(blank_to_null(key_column)),
    ]) }}
{%- endmacro %}
