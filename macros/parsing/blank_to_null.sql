{#- Trim a text value and turn '' into null, so "missing" has one spelling. -#}
{% macro blank_to_null(text_expr) -%}
    nullif(trim({{ text_expr }}), '')
{%- endmacro %}
