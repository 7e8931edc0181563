{#-
    The shared columns of a base model's `typed` CTE, over a raw shop table (macros/staging,
    models/staging/shop/base). The entity's own casts and rules stay in its model.
-#}

{#- Where a raw row came from and its raw text values: source_file, source_row, (with
    `raw_key`: delivery, file_sha256,) load_error, raw_line, (with `raw_key`: dedup_key,) then
    every column of `raw_columns` as raw_<column>, unchanged. `raw_key` is the SQL of the key the
    latest delivery wins on (cw_raw_dedup_key); none for a model without deliveries. -#}
{% macro cw_raw_row_columns(raw_columns, raw_key=none) -%}
    _source_file as source_file,
        _source_row as source_row,
        {%- if raw_key is not none %}
        _delivery as delivery,
        _file_sha256 as file_sha256,
        {%- endif %}
        _load_error as load_error,
        _raw_line as raw_line,
        {%- if raw_key is not none %}
        {{ raw_key }} as dedup_key,
        {%- endif %}
        {%- for column in raw_columns %}
        {{ column }} as raw_{{ column }}{{ ',' if not loop.last }}
        {%- endfor %}
{%- endmacro %}

{#- What a row says, as one text to compare copies by: the raw values of `raw_columns` except
    the key column `except_column`, '|'-separated, a missing value as ''. Two rows of one key
    with the same content are copies; with different content, conflicting versions. -#}
{% macro cw_row_content(raw_columns, except_column=none) -%}
    concat_ws(
            '|',
            {%- for column in raw_columns if column != except_column %}
            coalesce({{ column }}, ''){{ ',' if not loop.last }}
            {%- endfor %}
        )
{%- endmacro %}
