{#-
    The `source` CTE of an incremental base model (models/staging/shop/base): the raw rows of
    `source_name` this run decides (macros/incremental, docs/architecture.md "Incremental
    models"). A full build or a rebuild takes every raw row. A filtered run takes every raw row
    of each key (`raw_key`, cw_raw_dedup_key) that is affected: a key with a row in a new,
    changed or re-processed delivery or held from a delivery that is gone
    (cw_changed_deliveries), a key of a malformed row blanked by an erasure request, the keys
    of the built rows with a timestamp of `after_previous_run` later than the previous run's
    start (their verdict depends on the moment of the run: a future timestamp), and the keys
    the optional call block selects (`select dedup_key ...` rows whose verdict depends on
    something else: another table). All else a base model decides is per key, so the rows
    taken decide exactly as in a full refresh.

        {% call cw_incremental_source('orders', plan, raw_key, after_previous_run=['ordered_at']) %}
            select dedup_key from {{ this }} where ...
        {% endcall %},

    Renders the CTEs it needs (cw_* and affected_keys in a filtered run) and `source`, without
    a trailing comma.
-#}
{% macro cw_incremental_source(source_name, plan, raw_key, after_previous_run=[]) -%}
    {#- read by a filtered run (cw_changed_deliveries, cw_keys_of_erased_lines): dbt records the
        dependencies when it parses the model, whatever the plan then -#}
    {%- do source('shop', 'deliveries') -%}
    {%- do source('shop', 'erasure_requests') -%}
    {%- if plan.mode == 'filter' -%}
{{ cw_changed_deliveries(source_name, plan) }},

affected_keys as (
    {{ cw_keys_of_changed_deliveries(source_name, raw_key) }}
    union
    {%- if after_previous_run %}
    select dedup_key from {{ this }}
    where
        {%- for column in after_previous_run %}
        {{ 'or ' if not loop.first }}{{ column }} > {{ cw_previous_run_started(plan) }}
        {%- endfor %}
    union
    {%- endif %}
    {%- if caller is defined %}{{ caller() }}
    union
    {%- endif %}
    {{ cw_keys_of_erased_lines() }}
),

    {% endif -%}
source as (
    select * from {{ source('shop', source_name) }}
    {%- if plan.mode == 'filter' %}
        where {{ raw_key }} in (select dedup_key from affected_keys)
    {%- endif %}
)
{%- endmacro %}
