{#-
    Every recorded (customer, as-of date) of customer_tier_history lies in exactly one version
    of customer_tiers_history, and that version has the row's tier, stage and level.
-#}
with

history as (select * from {{ ref('customer_tier_history') }}),

versions as (select * from {{ ref('customer_tiers_history') }}),

matches as (
    select
        history.customer_id,
        history.as_of_date,
        count(versions.customer_id) as versions_covering,
        sum(
            case
                when coalesce(versions.value_tier, '') = coalesce(history.value_tier, '')
                    and versions.lifecycle_stage = history.lifecycle_stage
                    and versions.membership_level = history.membership_level
                    then 1
                else 0
            end
        ) as versions_agreeing
    from history
    left join versions
        on history.customer_id = versions.customer_id
            and history.as_of_date >= versions.valid_from
            and (versions.valid_to is null or history.as_of_date < versions.valid_to)
    group by history.customer_id, history.as_of_date
)

select *
from matches
where versions_covering <> 1
    or versions_agreeing <> 1
