{#-
    How the tier history (marts.customer_tier_history) replaces the as-of dates a run computed,
    and only those: the rows of every other date stay as they are, so runs for any dates in any
    order, and a rerun of a date, give the same table.

    - DuckDB (default): `delete+insert` keyed by as_of_date: the target's rows of the dates in
      the new batch are deleted and the batch is inserted, in one transaction.
    - Spark: `insert_overwrite` of the table partitioned by as_of_date (dbt-spark sets dynamic
      partition overwrite): the batch's date partitions are replaced, the others kept. Works
      with the default file format (parquet); no Delta needed.
-#}
{% macro cw_history_incremental_strategy() -%}
    {{ return(adapter.dispatch('cw_history_incremental_strategy', 'customer_warehouse')()) }}
{%- endmacro %}

{% macro default__cw_history_incremental_strategy() -%}
    {{ return('delete+insert') }}
{%- endmacro %}

{% macro spark__cw_history_incremental_strategy() -%}
    {{ return('insert_overwrite') }}
{%- endmacro %}

{#- The columns the history table is partitioned by: none on DuckDB, the as-of date on Spark. -#}
{% macro cw_history_partition_by() -%}
    {{ return(adapter.dispatch('cw_history_partition_by', 'customer_warehouse')()) }}
{%- endmacro %}

{% macro default__cw_history_partition_by() -%}
    {{ return(none) }}
{%- endmacro %}

{% macro spark__cw_history_partition_by() -%}
    {{ return(['as_of_date']) }}
{%- endmacro %}
