{#-
    The as-of date as a timestamp, at the time of day this dbt run started (UTC). It is the
    snapshot's updated_at: versions are dated by the as-of date they describe (so history can
    be replayed for past dates), and two runs for the same as-of date (late orders, a changed
    rule) still get distinct, ordered versions instead of colliding on one dbt_scd_id.
-#}
{% macro cw_tiers_computed_at(as_of_date_expr) -%}
    {%- set seconds = run_started_at.hour * 3600 + run_started_at.minute * 60
        + run_started_at.second -%}
    cast(
        {{ dbt.dateadd('second', seconds, 'cast(' ~ as_of_date_expr ~ ' as ' ~ dbt.type_timestamp() ~ ')') }}
        as {{ dbt.type_timestamp() }}
    )
{%- endmacro %}
