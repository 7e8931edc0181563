{#- The moment this dbt invocation started, UTC, as a timestamp literal. Same value in every
    model of one run, so "in the future" means the same thing everywhere. -#}
{% macro run_started_utc() -%}
    cast('{{ run_started_at.strftime("%Y-%m-%d %H:%M:%S") }}' as timestamp)
{%- endmacro %}
