{#-
    The tier history: each customer's value tier, lifecycle stage and membership level on every
    as-of date a run computed, one row per customer and as-of date, with the scores and
    balances that explain them (the inputs of customer_tier_transitions).

    A run writes the rows of its own as-of date and replaces that date's rows only
    (delete+insert by as_of_date on DuckDB, insert_overwrite of the date partition on Spark:
    macros/history/history_incremental.sql); every other date stays as it was. A date's rows
    depend only on the data and that date, never on the dates computed before, so running the
    dates in any order, a date twice, or a past range after months of daily runs gives the same
    table. The SCD2 view customer_tiers_history and customer_tier_transitions are derived from
    it with window functions over the dates.

    Daily runs add their as-of date (from customer_tiers). Past dates come from a backfill of
    the Dagster partitions of this asset (customer_warehouse/tier_history.py, docs/tiers.md):
    it builds customer_tiers for each past date in scratch schemas and runs this model there;
    `meta.history_table` keeps this model's own schema (macros/naming/generate_schema_name.sql).
-#}
{{ config(
    materialized='incremental',
    incremental_strategy=cw_history_incremental_strategy(),
    unique_key='as_of_date',
    partition_by=cw_history_partition_by(),
    on_schema_change='append_new_columns',
    meta={'history_table': true},
) }}

with

tiers as (select * from {{ ref('customer_tiers') }}),

final as (
    select
        customer_id,
        {%- for column in cw_tier_history_columns() %}
            {{ column }},
        {%- endfor %}
        as_of_date
    from tiers
)

select * from final
