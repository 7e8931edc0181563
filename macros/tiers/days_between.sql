{#-
    Whole days from `start_date` to `end_date` (positive when end is later), null when either is
    null. Spark's dbt.datediff wraps its inputs in assert_not_null, so it has its own version.
-#}
{% macro cw_days_between(start_date, end_date) -%}
    {{ return(adapter.dispatch('cw_days_between', 'customer_warehouse')(start_date, end_date)) }}
{%- endmacro %}

{% macro default__cw_days_between(start_date, end_date) -%}
    {{ dbt.datediff(start_date, end_date, 'day') }}
{%- endmacro %}

{% macro spark__cw_days_between(start_date, end_date) -%}
    datediff({{ end_date }}, {{ start_date }})
{%- endmacro %}
