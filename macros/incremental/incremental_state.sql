{#-
    Incremental models: what an incremental run recomputes, and how it knows
    (docs/architecture.md, "Incremental models").

    Every incremental model keeps a small state with its table, as the table's comment (metadata,
    not rows, so an incremental table and a full refresh hold exactly the same rows):
      rules              fingerprint of the SQL and seeds it is computed from (its own and every
                         upstream model's code, the contents of every upstream seed, the vars)
      run_started_at     when the run that last built it started (time-dependent verdicts such as
                         `future_ordered_at` are re-checked for what lay after that moment)
      deliveries_through the latest load or replacement recorded in raw.deliveries at that run
      as_of_date         (models that depend on the as-of date) the date it was computed as of

    A run is one of:
      full      the table does not exist yet, or `dbt build --full-refresh`: the model's SQL as is.
      rebuild   an incremental run without a usable state (no state, other rules, or, for
                models keyed on customers, a delivery replaced or removed since the last run):
                every row is deleted (pre-hook) and the same SQL inserts everything again.
      filter    the normal daily run: the same SQL, restricted by a filter on what changed.
    On an adapter without incremental support in this project (Spark, no row deletes without
    Delta) the models are plain tables and none of this runs (dbt_project.yml).
-#}

{% macro cw_state_prefix() -%}cw_incremental_state:{%- endmacro %}

{#- The state saved with `relation`, or none. -#}
{% macro cw_saved_state(relation) -%}
    {{ return(adapter.dispatch('cw_saved_state', 'customer_warehouse')(relation)) }}
{%- endmacro %}

{% macro default__cw_saved_state(relation) -%}
    {{ return(none) }}
{%- endmacro %}

{% macro duckdb__cw_saved_state(relation) -%}
    {%- set result = run_query(
        "select comment from duckdb_tables() where database_name = current_database() "
        ~ "and schema_name = '" ~ relation.schema ~ "' and table_name = '" ~ relation.identifier ~ "'"
    ) -%}
    {%- if result is none or (result.rows | length) == 0 or not result.rows[0][0] -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set text = result.rows[0][0] -%}
    {%- if not text.startswith(cw_state_prefix()) -%}
        {{ return(none) }}
    {%- endif -%}
    {{ return(fromjson(text[(cw_state_prefix() | length):])) }}
{%- endmacro %}

{% macro cw_save_state_sql(relation, state) -%}
    {{ return(adapter.dispatch('cw_save_state_sql', 'customer_warehouse')(relation, state)) }}
{%- endmacro %}

{% macro default__cw_save_state_sql(relation, state) -%}
    {{ exceptions.raise_compiler_error(
        "Incremental models are built as tables on " ~ target.type ~ " (dbt_project.yml); "
        ~ "there is no state to save for " ~ relation ~ "."
    ) }}
{%- endmacro %}

{% macro duckdb__cw_save_state_sql(relation, state) -%}
    comment on table {{ relation }} is '{{ (cw_state_prefix() ~ tojson(state)) | replace("'", "''") }}'
{%- endmacro %}

{#- Every node this model is computed from, itself included (unique ids). -#}
{% macro cw_upstream_nodes() -%}
    {%- set seen = [model.unique_id] -%}
    {%- for unique_id in seen -%}
        {%- set node = graph.nodes.get(unique_id) -%}
        {%- if node is not none -%}
            {%- for parent in node.get('depends_on', {}).get('nodes', []) -%}
                {%- if parent not in seen and parent in graph.nodes -%}
                    {%- do seen.append(parent) -%}
                {%- endif -%}
            {%- endfor -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(seen | sort) }}
{%- endmacro %}

{#- Fingerprint of what the model's rows are computed from, apart from the raw data and the
    as-of date: the SQL of this and every upstream model, the rows of every upstream seed, the
    project's vars and the source of every macro of this project (macros/: the rules the models
    share, such as the staging machinery or the tier settings pivot). Changing any of them
    rebuilds the model at its next run. All of the project's macros count, not only those a
    model calls: dbt records a model's direct macro calls but not what a dispatched or nested
    macro calls, and a rebuild too many is cheaper than a stale row. -#}
{% macro cw_rules_fingerprint() -%}
    {%- set parts = [] -%}
    {%- for unique_id in cw_upstream_nodes() -%}
        {%- set node = graph.nodes[unique_id] -%}
        {%- do parts.append(unique_id ~ '\n' ~ (node.get('raw_code') or '')) -%}
        {%- if node.resource_type == 'seed' -%}
            {%- set relation = adapter.get_relation(node.database, node.schema, node.alias or node.name) -%}
            {%- if relation is not none -%}
                {%- set rows = run_query('select * from ' ~ relation) -%}
                {%- set lines = [] -%}
                {%- for row in rows.rows -%}
                    {%- do lines.append(row.values() | join('|')) -%}
                {%- endfor -%}
                {%- do parts.append(lines | sort | join('\n')) -%}
            {%- endif -%}
        {%- endif -%}
    {%- endfor -%}
    {%- for name in [
        'max_order_amount', 'max_item_quantity', 'max_redemption_points', 'max_adjustment_points',
        'max_field_length', 'earliest_plausible_date', 'earliest_birth_date', 'source_timezone',
        'reporting_currency', 'channels',
    ] -%}
        {%- do parts.append(name ~ '=' ~ var(name)) -%}
    {%- endfor -%}
    {%- for name in context.keys() | sort -%}
        {%- set candidate = context[name] -%}
        {%- if candidate.macro is defined and candidate.macro.package_name == project_name -%}
            {%- do parts.append('macro ' ~ name ~ '\n' ~ candidate.macro.macro_sql) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(local_md5(parts | join('\n'))) }}
{%- endmacro %}

{% macro cw_deliveries_through() -%}
    {%- set result = run_query(
        "select cast(max(case when status_changed_at > loaded_at then status_changed_at "
        ~ "else loaded_at end) as varchar) from " ~ source('shop', 'deliveries')
    ) -%}
    {{ return(result.rows[0][0] if result.rows[0][0] is not none else '1970-01-01 00:00:00') }}
{%- endmacro %}

{% macro cw_current_as_of_date() -%}
    {%- set result = run_query('select cast(as_of_date as varchar) from ' ~ ref('int_as_of_date')) -%}
    {{ return(result.rows[0][0]) }}
{%- endmacro %}

{#- Is this run an incremental build of an incremental model (the table exists, no
    --full-refresh, the adapter builds this model incrementally)? -#}
{% macro cw_is_incremental_build() -%}
    {{ return(execute and model.config.materialized == 'incremental' and is_incremental()) }}
{%- endmacro %}

{#-
    How this run builds the model: {'mode': 'full' | 'rebuild' | 'filter', 'why': ...,
    'previous': saved state or none}. `kind`:
      raw_rows   staging models of one raw row per row: changes are found exactly from the
                 deliveries the table holds (file and content hash), so a replaced or removed
                 delivery is handled row by row;
      customers  models whose rows belong to one customer each and depend on the as-of date:
                 a replaced or removed order delivery (whose customers the raw tables no
                 longer know) rebuilds them.
-#}
{% macro cw_incremental_plan(kind) -%}
    {%- if not cw_is_incremental_build() -%}
        {{ return({'mode': 'full', 'why': 'full build', 'previous': none}) }}
    {%- endif -%}
    {%- set previous = cw_saved_state(this) -%}
    {%- if previous is none -%}
        {{ return({'mode': 'rebuild', 'why': 'no saved state', 'previous': none}) }}
    {%- endif -%}
    {%- if previous.get('rules') != cw_rules_fingerprint() -%}
        {{ return({'mode': 'rebuild', 'why': 'rules changed', 'previous': previous}) }}
    {%- endif -%}
    {%- if kind == 'customers' -%}
        {%- if previous.get('as_of_date') is none -%}
            {{ return({'mode': 'rebuild', 'why': 'no as-of date saved', 'previous': previous}) }}
        {%- endif -%}
        {%- set replaced = run_query(
            "select count(*) from " ~ source('shop', 'deliveries') ~ " where source = 'orders' "
            ~ "and status in ('replaced', 'removed') and status_changed_at > cast('"
            ~ previous.deliveries_through ~ "' as timestamp)"
        ) -%}
        {%- if replaced.rows[0][0] > 0 -%}
            {{ return({'mode': 'rebuild', 'why': 'an order delivery was replaced or removed', 'previous': previous}) }}
        {%- endif -%}
    {%- endif -%}
    {{ return({'mode': 'filter', 'why': 'changes since the last run', 'previous': previous}) }}
{%- endmacro %}

{#- Deliveries loaded after this moment are (re)processed by a filtered run: the newest load
    the table had seen, minus var('incremental_lookback_days'). -#}
{% macro cw_lookback_start(plan) -%}
    {%- set text = plan.previous.deliveries_through -%}
    {%- set through = modules.datetime.datetime.strptime(
        text, '%Y-%m-%d %H:%M:%S.%f' if '.' in text else '%Y-%m-%d %H:%M:%S'
    ) -%}
    {%- set start = through - modules.datetime.timedelta(days=var('incremental_lookback_days') | int) -%}
    {{ return("cast('" ~ start.strftime('%Y-%m-%d %H:%M:%S.%f') ~ "' as timestamp)") }}
{%- endmacro %}

{% macro cw_previous_run_started(plan) -%}
    {{ return("cast('" ~ plan.previous.run_started_at ~ "' as timestamp)") }}
{%- endmacro %}

{#- Pre-hook of every incremental model: a rebuild starts from an empty table; a filtered run
    of a customer-keyed model deletes the rows of the customers it recomputes (a customer may
    have fewer rows now, or none). -#}
{% macro cw_incremental_pre_hook(kind) -%}
    {%- if cw_is_incremental_build() -%}
        {%- set plan = cw_incremental_plan(kind) -%}
        {%- do log(this ~ ": incremental run, " ~ plan.mode ~ " (" ~ plan.why ~ ")", info=true) -%}
        {%- if plan.mode == 'rebuild' -%}
            delete from {{ this }}
        {%- elif plan.mode == 'filter' and kind == 'customers' -%}
            delete from {{ this }}
            where customer_id in ({{ cw_affected_customers(plan) }})
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{#- Post-hook of every incremental model: a staging model drops the rows of deliveries that were
    replaced or removed (rows the raw table no longer has), then the state is saved. -#}
{% macro cw_incremental_post_hook(kind, source_name=none) -%}
    {%- if execute and model.config.materialized == 'incremental' -%}
        {%- if kind == 'raw_rows' -%}
            delete from {{ this }}
            where not exists (
                select 1 from {{ source('shop', 'deliveries') }} as deliveries
                where deliveries.source = '{{ source_name }}'
                    and deliveries.status = 'loaded'
                    and deliveries.file = {{ this }}.source_file
                    and deliveries.file_sha256 = {{ this }}.file_sha256
            );
        {% endif -%}
        {%- set state = {
            'rules': cw_rules_fingerprint(),
            'run_started_at': run_started_at.strftime('%Y-%m-%d %H:%M:%S'),
            'deliveries_through': cw_deliveries_through(),
        } -%}
        {%- if kind == 'customers' -%}
            {%- do state.update({'as_of_date': cw_current_as_of_date()}) -%}
        {%- endif -%}
        {{ cw_save_state_sql(this, state) }}
    {%- endif -%}
{%- endmacro %}
