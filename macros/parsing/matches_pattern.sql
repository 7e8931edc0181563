{#-
    True when the text matches the regular expression (RE2 on DuckDB, Java on Spark), false when
    it does not, null when the text is null. Patterns are written once, in the macros below, in
    the syntax both engines share.
-#}
{% macro cw_matches_pattern(text_expr, pattern) -%}
    {{ return(adapter.dispatch('cw_matches_pattern', 'customer_warehouse')(text_expr, pattern)) }}
{%- endmacro %}

{% macro default__cw_matches_pattern(text_expr, pattern) -%}
    regexp_matches({{ text_expr }}, '{{ pattern }}')
{%- endmacro %}

{% macro spark__cw_matches_pattern(text_expr, pattern) -%}
    {#- Spark's SQL parser unescapes backslashes in literals: double them. -#}
    ({{ text_expr }} rlike '{{ pattern | replace("\\", "\\\\") }}')
{%- endmacro %}
