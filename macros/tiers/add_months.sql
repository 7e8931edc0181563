{#- `date_expr` plus `months` calendar months, as a date, clamped to a shorter month's end (cw_add_to_date). -#}
{% macro cw_add_months(date_expr, months) -%}
    {{ return(cw_add_to_date('month', months, date_expr)) }}
{%- endmacro %}
