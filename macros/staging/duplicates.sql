{#-
    The columns of a base model's `duplicates_marked` CTE that decide which raw rows count
    (docs/raw-data.md, "The latest delivery wins"). `rows` is the CTE or alias they are read
    from (it has dedup_key, delivery, source_row and row_content).
-#}

{#- Latest delivery wins: latest_delivery (the latest delivery holding the row's key) and
    is_superseded (the row's delivery is older: history, never a reject). -#}
{% macro cw_latest_delivery_columns(rows) -%}
    max({{ rows }}.delivery) over (partition by {{ rows }}.dedup_key) as latest_delivery,
        {{ rows }}.delivery
        < max({{ rows }}.delivery) over (partition by {{ rows }}.dedup_key) as is_superseded
{%- endmacro %}

{#- Copies within one export: copy_number (1 for the first row of each content per
    `partition_by`, by `order_by`) and, unless `conflicts` is false, has_conflicting_versions
    (rows of one `partition_by` with different content). `partition_by` is the key and
    delivery by default: the rules of a single export, applied per delivery. -#}
{% macro cw_duplicate_columns(
    rows, partition_by=['dedup_key', 'delivery'], order_by=['source_row'], conflicts=true
) -%}
    {%- set partition = [] -%}
    {%- for column in partition_by -%}
        {%- do partition.append(rows ~ '.' ~ column) -%}
    {%- endfor -%}
    {%- set order = [] -%}
    {%- for column in order_by -%}
        {%- do order.append(rows ~ '.' ~ column) -%}
    {%- endfor -%}
    row_number() over (
            partition by {{ partition | join(', ') }}, {{ rows }}.row_content
            order by {{ order | join(', ') }}
        ) as copy_number
    {%- if conflicts %},
        min({{ rows }}.row_content) over (partition by {{ partition | join(', ') }})
        <> max({{ rows }}.row_content) over (partition by {{ partition | join(', ') }})
            as has_conflicting_versions
    {%- endif %}
{%- endmacro %}

{#- The whole `duplicates_marked` CTE of a base model whose rows need nothing else there:
    every column of `rows`, then cw_latest_delivery_columns and cw_duplicate_columns. -#}
{% macro cw_duplicates_marked(rows) -%}
duplicates_marked as (
    select
        {{ rows }}.*,
        {{ cw_latest_delivery_columns(rows) }},
        {{ cw_duplicate_columns(rows) }}
    from {{ rows }}
)
{%- endmacro %}
