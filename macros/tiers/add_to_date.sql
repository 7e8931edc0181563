{#-
    `date_expr` plus `count` days or months (`unit`: 'day' or 'month'), as a date; a month is
    a calendar month, the day clamped to the end of a shorter month (2024-02-29 + 12 months =
    2025-02-28) on every engine. Read through cw_add_days and cw_add_months. dbt.dateadd
    returns a timestamp and, on Spark, raises on null input (assert_not_null), which nullable
    columns such as a last purchase date cannot afford; Spark's own date_add and add_months are
    null-safe and return a date.
-#}
{% macro cw_add_to_date(unit, count, date_expr) -%}
    {%- if unit not in ('day', 'month') -%}
        {{ exceptions.raise_compiler_error("cw_add_to_date: unit must be 'day' or 'month', not '" ~ unit ~ "'") }}
    {%- endif -%}
    {{ return(adapter.dispatch('cw_add_to_date', 'customer_warehouse')(unit, count, date_expr)) }}
{%- endmacro %}

{% macro default__cw_add_to_date(unit, count, date_expr) -%}
    cast({{ dbt.dateadd(unit, count, date_expr) }} as date)
{%- endmacro %}

{% macro spark__cw_add_to_date(unit, count, date_expr) -%}
    {{ 'date_add' if unit == 'day' else 'add_months' }}({{ date_expr }}, cast({{ count }} as int))
{%- endmacro %}
