{#-
    Aggregate: the continuous (interpolated) percentile `fraction` of `expr` within a group, as a
    double. `cw_percentile_cont(x, 0.5)` is the median. DuckDB has quantile_cont, Spark an exact
    `percentile`; the default is the ANSI ordered-set aggregate (Postgres, Snowflake, ...).
-#}
{% macro cw_percentile_cont(expr, fraction) -%}
    {{ return(adapter.dispatch('cw_percentile_cont', 'customer_warehouse')(expr, fraction)) }}
{%- endmacro %}

{% macro default__cw_percentile_cont(expr, fraction) -%}
    percentile_cont({{ fraction }}) within group (order by {{ expr }})
{%- endmacro %}

{% macro duckdb__cw_percentile_cont(expr, fraction) -%}
    quantile_cont({{ expr }}, {{ fraction }})
{%- endmacro %}

{% macro spark__cw_percentile_cont(expr, fraction) -%}
    percentile({{ expr }}, {{ fraction }})
{%- endmacro %}
