{#-
    Schemas are exactly the configured names (`staging`, `intermediate`, `marts`, `seeds`,
    `snapshots`), never `<target schema>_marts`: BI tools and the Python assets address them by
    name. Nodes without a configured schema land in the target's schema.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
