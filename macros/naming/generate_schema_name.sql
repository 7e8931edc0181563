{#-
    Schemas are exactly the configured names (`staging`, `intermediate`, `marts`, `seeds`),
    never `<target schema>_marts`: BI tools and the Python assets address them by name. Nodes
    without a configured schema land in the target's schema.

    Replaying past as-of dates (a partition range of the tier history, customer_warehouse/
    tier_history.py) builds every model in scratch schemas named `<scratch_schema_prefix><schema>`
    (var `scratch_schema_prefix`), so the warehouse's own tables are never rewritten for a past
    date; only the history tables keep their real schema, so the
    replayed rows land in them (`meta: {history_table: true}`). The prefix must be a plain identifier.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- set schema = target.schema if custom_schema_name is none else custom_schema_name | trim -%}
    {%- set prefix = var('scratch_schema_prefix', '') | string | trim -%}
    {%- if prefix in ('', 'None') or (node is not none and (node.config.meta or {}).get('history_table')) -%}
        {{ schema }}
    {%- elif modules.re.match('^[a-z][a-z0-9_]{0,30}$', prefix) -%}
        {{ prefix ~ schema }}
    {%- else -%}
        {{ exceptions.raise_compiler_error(
            "scratch_schema_prefix='" ~ prefix ~ "' is not a plain lower-case identifier."
        ) }}
    {%- endif -%}
{%- endmacro %}
