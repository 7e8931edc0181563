{#- Cast any value to the engine's text type (varchar on DuckDB, string on Spark). -#}
{% macro cw_as_text(expr) -%}
    cast({{ expr }} as {{ dbt.type_string() }})
{%- endmacro %}
