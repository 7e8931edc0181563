{#-
    The filters of filtered incremental runs (macros/incremental/incremental_state.sql says when
    a run is filtered). Each returns SQL that the model's own SQL uses in one `where`, so a full
    refresh and an incremental run compute every row they write with the same SQL.
-#}

{#- The key latest-wins and duplicates are decided on, for a raw row: the entity id, or for a
    row without one, the row itself (`<file>:<row>`), so such a row never shares a decision with
    another row. Over the raw table (`_source_file`, `_source_row`). -#}
{% macro cw_raw_dedup_key(id_expression) -%}
    coalesce(
        {{ id_expression }},
        {{ dbt.concat(["_source_file", "':'", dbt.cast("_source_row", api.Column.translate_type("string"))]) }}
    )
{%- endmacro %}

{#-
    CTEs `cw_built_files`, `cw_current_files`, `cw_new_files` (file) and `cw_gone_files`
    (source_file, file_sha256) of a staging model of raw rows (columns source_file and
    file_sha256): the deliveries of `source_name` the table does not hold yet, or that were
    loaded within var('incremental_lookback_days') before the last run's newest load; and the
    ones it holds that are no longer current (replaced by a changed file, or removed).
-#}
{% macro cw_changed_deliveries(source_name, plan) -%}
    cw_built_files as (
        select distinct
            source_file,
            file_sha256
        from {{ this }}
    ),

    cw_current_files as (
        select
            file,
            file_sha256,
            loaded_at
        from {{ source('shop', 'deliveries') }}
        where source = '{{ source_name }}' and status = 'loaded'
    ),

    cw_new_files as (
        select cw_current_files.file
        from cw_current_files
        left join cw_built_files
            on cw_current_files.file = cw_built_files.source_file
                and cw_current_files.file_sha256 = cw_built_files.file_sha256
        where cw_built_files.source_file is null
            or cw_current_files.loaded_at > {{ cw_lookback_start(plan) }}
    ),

    cw_gone_files as (
        select
            cw_built_files.source_file,
            cw_built_files.file_sha256
        from cw_built_files
        left join cw_current_files
            on cw_built_files.source_file = cw_current_files.file
                and cw_built_files.file_sha256 = cw_current_files.file_sha256
        where cw_current_files.file is null
    )
{%- endmacro %}

{#- Keys whose rows must be decided again because of changed deliveries: every key of a new or
    re-processed delivery's rows, and every key the table holds from a delivery that is gone.
    Needs the CTEs of cw_changed_deliveries. -#}
{% macro cw_keys_of_changed_deliveries(source_name, raw_key) -%}
    select {{ raw_key }} as dedup_key
    from {{ source('shop', source_name) }}
    where _source_file in (select file from cw_new_files)
    union
    select built.dedup_key
    from {{ this }} as built
    inner join cw_gone_files
        on built.source_file = cw_gone_files.source_file
            and built.file_sha256 = cw_gone_files.file_sha256
{%- endmacro %}

{#- Keys of malformed rows whose raw line names a customer with an erasure request: the raw
    loader blanked the line in place (docs/privacy.md), so staging must take it again. -#}
{% macro cw_keys_of_erased_lines() -%}
    select built.dedup_key
    from {{ this }} as built
    inner join {{ source('shop', 'erasure_requests') }} as erased
        on {{ dbt.position('erased.customer_id', 'built.raw_line') }} > 0
    where built.raw_line is not null
{%- endmacro %}

{#-
    The customers whose rows a filtered run of a customer-keyed model recomputes:
    - the customers of every order that has a row in a delivery loaded since the lookback start
      (a new order, a copy with a new status or a correction, a conflicting copy; the old
      customer too when a correction moved the order to another customer);
    - the customers of orders whose date or status change lies between the previous as-of date
      and this one (in either direction), which appear, disappear or change status;
    - the customers of orders dated or changed after the previous run started: a verdict such as
      future_ordered_at depends on the moment of the run.
-#}
{% macro cw_affected_customers(plan) -%}
    {%- set previous_as_of = "cast('" ~ plan.previous.as_of_date ~ "' as date)" -%}
    {%- set as_of = "(select as_of_date from " ~ ref('int_as_of_date') ~ ")" -%}
    select orders.customer_id
    from {{ ref('base_shop__orders') }} as orders
    where orders.dedup_key in (
        select recent.dedup_key
        from {{ ref('base_shop__orders') }} as recent
        where recent.source_file in (
            select file from {{ source('shop', 'deliveries') }}
            where source = 'orders' and status = 'loaded'
                and loaded_at > {{ cw_lookback_start(plan) }}
        )
    )
        and orders.customer_id is not null
    union
    select customer_id
    from {{ ref('stg_shop__orders') }}
    where (ordered_date > least({{ previous_as_of }}, {{ as_of }})
        and ordered_date <= greatest({{ previous_as_of }}, {{ as_of }}))
        or (cast(status_changed_at as date) > least({{ previous_as_of }}, {{ as_of }})
            and cast(status_changed_at as date) <= greatest({{ previous_as_of }}, {{ as_of }}))
    union
    select customer_id
    from {{ ref('base_shop__orders') }}
    where customer_id is not null
        and (ordered_at > {{ cw_previous_run_started(plan) }}
            or status_changed_at > {{ cw_previous_run_started(plan) }})
{%- endmacro %}
