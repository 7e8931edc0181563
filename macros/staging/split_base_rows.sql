{#-
    The views that split a base model's rows (models/staging/shop): every raw row is trusted
    (stg_shop__*), rejected (*_rejects) or superseded by a later delivery (superseded_*), so
    raw rows = accepted + rejected + superseded (tests/dbt/staging/assert_raw_rows_accounted_for.sql).
    `base_model` is the base model's ref(); each macro renders the whole view.
-#}

{#- The trusted rows: no reject_reason and not superseded (`latest_delivery_wins`: false for
    a base model without is_superseded). The call block lists the view's columns (the entity's
    own); source_file and source_row, where the row came from, are added last. -#}
{% macro cw_trusted_rows(base_model, latest_delivery_wins=true) -%}
with

checked as (
    select * from {{ base_model }}
    where reject_reason is null{% if latest_delivery_wins %} and not is_superseded{% endif %}
),

final as (
    select{{ caller() }},
        source_file,
        source_row
    from checked
)

select * from final
{%- endmacro %}

{#- The rejected rows: where they came from, reject_reason, the loader's load_error and
    raw_line, and the raw text of each of `raw_columns` (cw_shop_raw_columns) under its own
    name. -#}
{% macro cw_rejected_rows(base_model, raw_columns) -%}
    {{ cw_raw_values_view(
        base_model, 'reject_reason is not null',
        ['source_file', 'source_row', 'reject_reason', 'load_error', 'raw_line'], raw_columns
    ) }}
{%- endmacro %}

{#- The superseded rows: where they came from, their delivery and the later delivery that
    replaced them (superseded_by_delivery), and the raw text of each of `raw_columns` under its
    own name. History, not rejects. -#}
{% macro cw_superseded_rows(base_model, raw_columns) -%}
    {{ cw_raw_values_view(
        base_model, 'is_superseded',
        ['source_file', 'source_row', 'delivery', 'latest_delivery as superseded_by_delivery'],
        raw_columns
    ) }}
{%- endmacro %}

{#- A view of the base model's rows where `condition` holds: the `columns` given, then each
    of `raw_columns` as raw_<column> under its own name. -#}
{% macro cw_raw_values_view(base_model, condition, columns, raw_columns) -%}
with

checked as (
    select * from {{ base_model }}
    where {{ condition }}
),

final as (
    select
        {%- for column in columns %}
        {{ column }},
        {%- endfor %}
        {%- for column in raw_columns %}
        raw_{{ column }} as {{ column }}{{ ',' if not loop.last }}
        {%- endfor %}
    from checked
)

select * from final
{%- endmacro %}
