{#-
    SCD2 view of the tier history: one row per customer and version, a version being a run of
    consecutive recorded as-of dates (customer_tier_history) on which the customer's value
    tier, lifecycle stage and membership level stayed the same.
    - valid_from: the first as-of date of the version; valid_to: the first as-of date of the
      next version (exclusive), null for the current version; is_current = valid_to is null.
      A customer's state on day D is the version with valid_from <= D < valid_to (or current).
    - last_recorded_on: the last as-of date recorded in the version. Between two recorded dates
      (month ends of a long backfill) the state is taken as unchanged until the next one.
    - The other columns are the scores and balances on valid_from (why the version started).
    Derived from the dates alone (window functions), so it is the same whatever order the dates
    were computed in. It replaces the dbt snapshot customer_tiers_snapshot (docs/bi.md).
-#}
{{ config(materialized='view') }}

with

history as (select * from {{ ref('customer_tier_history') }}),

compared as (
    select
        history.*,
        {{ cw_on_previous_as_of_date("coalesce(value_tier, '')") }} as previous_value_tier,
        {{ cw_on_previous_as_of_date('lifecycle_stage') }} as previous_lifecycle_stage,
        {{ cw_on_previous_as_of_date('membership_level') }} as previous_membership_level
    from history
),

version_starts as (
    select
        compared.*,
        case
            when previous_lifecycle_stage is null
                or coalesce(value_tier, '') <> previous_value_tier
                or lifecycle_stage <> previous_lifecycle_stage
                or membership_level <> previous_membership_level
                then 1
            else 0
        end as starts_version
    from compared
),

numbered as (
    select
        version_starts.*,
        {{ cw_running_sum('starts_version', 'customer_id', 'as_of_date') }} as version_number
    from version_starts
),

version_ends as (
    select
        customer_id,
        version_number,
        max(as_of_date) as last_recorded_on
    from numbered
    group by customer_id, version_number
),

versions as (
    select
        numbered.customer_id,
        numbered.version_number,
        {%- for column in cw_tier_history_columns() %}
            numbered.{{ column }},
        {%- endfor %}
        numbered.as_of_date as valid_from,
        version_ends.last_recorded_on,
        lead(numbered.as_of_date) over (
            partition by numbered.customer_id order by numbered.as_of_date
        ) as valid_to
    from numbered
    inner join version_ends
        on numbered.customer_id = version_ends.customer_id
            and numbered.version_number = version_ends.version_number
    where numbered.starts_version = 1
),

final as (
    select
        customer_id,
        cast(version_number as {{ dbt.type_int() }}) as version_number,
        {%- for column in cw_tier_history_columns() %}
            {{ column }},
        {%- endfor %}
        valid_from,
        valid_to,
        last_recorded_on,
        valid_to is null as is_current
    from versions
)

select * from final
