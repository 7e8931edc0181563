{#- `date_expr` plus `days` days, as a date (cw_add_to_date). -#}
{% macro cw_add_days(date_expr, days) -%}
    {{ return(cw_add_to_date('day', days, date_expr)) }}
{%- endmacro %}
