{#-
    The as-of date as a timestamp, at the time of day this dbt run started (UTC):
    customer_tiers.computed_at. The date is the as-of date the row describes; the time of day
    tells two runs for the same as-of date apart (late orders, a changed rule).
-#}
{% macro cw_tiers_computed_at(as_of_date_expr) -%}
    {%- set seconds = run_started_at.hour * 3600 + run_started_at.minute * 60
        + run_started_at.second -%}
    cast(
        {{ dbt.dateadd('second', seconds, 'cast(' ~ as_of_date_expr ~ ' as ' ~ dbt.type_timestamp() ~ ')') }}
        as {{ dbt.type_timestamp() }}
    )
{%- endmacro %}
