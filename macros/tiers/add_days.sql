{#-
    `date_expr` plus `days` days, as a date. dbt.dateadd returns a timestamp and, on Spark,
    raises on null input (assert_not_null), which nullable columns such as a last purchase date
    cannot afford; Spark's own date_add is null-safe and returns a date.
-#}
{% macro cw_add_days(date_expr, days) -%}
    {{ return(adapter.dispatch('cw_add_days', 'customer_warehouse')(date_expr, days)) }}
{%- endmacro %}

{% macro default__cw_add_days(date_expr, days) -%}
    cast({{ dbt.dateadd('day', days, date_expr) }} as date)
{%- endmacro %}

{% macro spark__cw_add_days(date_expr, days) -%}
    date_add({{ date_expr }}, cast({{ days }} as int))
{%- endmacro %}
