{#-
    `date_expr` plus `months` calendar months, as a date; the day is clamped to the end of a
    shorter month (2024-02-29 + 12 months = 2025-02-28) on every engine. Null-safe on Spark
    (see cw_add_days for why dbt.dateadd is not used there).
-#}
{% macro cw_add_months(date_expr, months) -%}
    {{ return(adapter.dispatch('cw_add_months', 'customer_warehouse')(date_expr, months)) }}
{%- endmacro %}

{% macro default__cw_add_months(date_expr, months) -%}
    cast({{ dbt.dateadd('month', months, date_expr) }} as date)
{%- endmacro %}

{% macro spark__cw_add_months(date_expr, months) -%}
    add_months({{ date_expr }}, cast({{ months }} as int))
{%- endmacro %}
