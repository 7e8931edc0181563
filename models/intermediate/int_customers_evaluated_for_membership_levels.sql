{#-
    Membership level per customer on the as-of date, with the downgrade grace period, computed
    from the order history alone (no history table, so any past date can be recomputed).

    Rules (seeds/tiers/membership_levels.csv, seeds/tiers/tier_settings.csv; docs/tiers.md):
    - On a day D a customer qualifies for a level when their completed orders counting on D
      reach both the level's min_spend_12m and min_orders_12m. An order counts from its day
      until the day before the same day `membership_window_months` later.
    - The level on the as-of date is the highest level the customer qualified for on any day
      within that level's grace_period_days before the as-of date (the as-of date included).
      Upgrades are immediate; a customer last qualified for a level on day Q keeps it through
      Q + grace_period_days and is downgraded the day after.

    How: the spend and order count counting on a day change only on purchase days (up) and on
    the days purchases stop counting (down). Those change days, the as-of date and the start of
    every level's grace window are the checkpoints; the running sum of the changes gives the
    exact balances at each checkpoint, and between checkpoints nothing changes, so checking the
    checkpoints is the same as checking every day. Window functions only: linear in orders.
-#}
with

customers as (select customer_id from {{ ref('int_customers_filtered_to_as_of_date') }}),

customer_days as (select * from {{ ref('int_orders_aggregated_to_customer_days') }}),

membership_levels as (select * from {{ ref('membership_levels') }}),

as_of as (select as_of_date from {{ ref('int_as_of_date') }}),

settings as (
    {{ cw_tier_settings() }}
),

probe_dates as (
    select
        {{ cw_add_days('as_of.as_of_date', '-membership_levels.grace_period_days') }}
            as probe_date
    from membership_levels
    cross join as_of
    union
    select as_of_date as probe_date from as_of
),

earliest_probe as (
    select min(probe_date) as earliest_probe_date from probe_dates
),

bounds as (
    select
        as_of.as_of_date,
        settings.window_months,
        earliest_probe.earliest_probe_date
    from as_of
    cross join settings
    cross join earliest_probe
),

counting_days as (
    {#- Earlier purchase days entered and left the window before the first checkpoint. -#}
    select
        customer_days.customer_id,
        customer_days.purchase_date,
        customer_days.revenue,
        customer_days.orders_count,
        {{ cw_add_months('customer_days.purchase_date', 'bounds.window_months') }}
            as stops_counting_date
    from customer_days
    cross join bounds
    where customer_days.purchase_date
        > {{ cw_add_months('bounds.earliest_probe_date', '-(bounds.window_months + 1)') }}
),

buyers as (
    select distinct customer_id from counting_days
),

balance_changes as (
    select
        customer_id,
        purchase_date as change_date,
        revenue as spend_change,
        orders_count as orders_change
    from counting_days
    union all
    select
        customer_id,
        stops_counting_date as change_date,
        -revenue as spend_change,
        -orders_count as orders_change
    from counting_days
    union all
    select
        buyers.customer_id,
        probe_dates.probe_date as change_date,
        0 as spend_change,
        0 as orders_change
    from buyers
    cross join probe_dates
),

daily_changes as (
    select
        balance_changes.customer_id,
        balance_changes.change_date,
        sum(balance_changes.spend_change) as spend_change,
        sum(balance_changes.orders_change) as orders_change
    from balance_changes
    cross join bounds
    where balance_changes.change_date <= bounds.as_of_date
    group by balance_changes.customer_id, balance_changes.change_date
),

checkpoints as (
    select
        customer_id,
        change_date as checkpoint_date,
        {{ cw_running_sum('spend_change', 'customer_id', 'change_date') }} as spend_12m,
        {{ cw_running_sum('orders_change', 'customer_id', 'change_date') }} as orders_12m,
        lead(change_date) over (
            partition by customer_id order by change_date
        ) as next_checkpoint_date
    from daily_changes
),

checkpoints_in_window as (
    select checkpoints.*
    from checkpoints
    cross join bounds
    where checkpoints.checkpoint_date >= bounds.earliest_probe_date
),

qualifications as (
    {#- Every level met at a checkpoint that lies within that level's grace window. -#}
    select
        checkpoints_in_window.customer_id,
        checkpoints_in_window.checkpoint_date,
        checkpoints_in_window.next_checkpoint_date,
        membership_levels.level_rank
    from checkpoints_in_window
    cross join as_of
    inner join membership_levels
        on {{ cw_membership_level_met(
            'checkpoints_in_window.spend_12m', 'checkpoints_in_window.orders_12m'
        ) }}
    where checkpoints_in_window.checkpoint_date
        >= {{ cw_add_days('as_of.as_of_date', '-membership_levels.grace_period_days') }}
),

held_ranks as (
    select
        customer_id,
        max(level_rank) as held_level_rank
    from qualifications
    group by customer_id
),

held_level_last_qualified as (
    select
        qualifications.customer_id,
        max(qualifications.checkpoint_date) as last_qualified_checkpoint_date
    from qualifications
    inner join held_ranks
        on qualifications.customer_id = held_ranks.customer_id
            and qualifications.level_rank = held_ranks.held_level_rank
    group by qualifications.customer_id
),

below_since as (
    {#- The checkpoint after the last qualifying one is the day the customer fell below. -#}
    select
        held_level_last_qualified.customer_id,
        checkpoints.next_checkpoint_date as below_held_level_since
    from held_level_last_qualified
    inner join checkpoints
        on held_level_last_qualified.customer_id = checkpoints.customer_id
            and held_level_last_qualified.last_qualified_checkpoint_date
            = checkpoints.checkpoint_date
),

balances_on_as_of_date as (
    select
        customers.customer_id,
        coalesce(checkpoints.spend_12m, 0) as spend_12m,
        coalesce(checkpoints.orders_12m, 0) as orders_12m
    from customers
    cross join as_of
    left join checkpoints
        on customers.customer_id = checkpoints.customer_id
            and as_of.as_of_date = checkpoints.checkpoint_date
),

qualified_ranks as (
    {{ cw_highest_membership_level_met(
        'balances_on_as_of_date', 'customer_id', 'spend_12m', 'orders_12m',
        rank_column='qualified_level_rank'
    ) }}
),

levels_ranked as (
    select
        membership_levels.*,
        lead(membership_level) over (order by level_rank) as next_membership_level,
        lead(min_spend_12m) over (order by level_rank) as next_min_spend_12m,
        lead(min_orders_12m) over (order by level_rank) as next_min_orders_12m
    from membership_levels
),

customer_levels as (
    select
        balances_on_as_of_date.customer_id,
        balances_on_as_of_date.spend_12m,
        balances_on_as_of_date.orders_12m,
        qualified_ranks.qualified_level_rank,
        greatest(
            coalesce(held_ranks.held_level_rank, qualified_ranks.qualified_level_rank),
            qualified_ranks.qualified_level_rank
        ) as level_rank,
        below_since.below_held_level_since
    from balances_on_as_of_date
    left join qualified_ranks using (customer_id)
    left join held_ranks using (customer_id)
    left join below_since using (customer_id)
),

final as (
    select
        customer_levels.customer_id,
        cast(customer_levels.spend_12m as decimal(18, 2)) as spend_12m,
        cast(customer_levels.orders_12m as {{ dbt.type_int() }}) as orders_12m,
        qualified_levels.membership_level as qualified_membership_level,
        held_levels.membership_level,
        held_levels.level_rank as membership_level_rank,
        customer_levels.level_rank > customer_levels.qualified_level_rank as is_in_grace_period,
        case
            when customer_levels.level_rank > customer_levels.qualified_level_rank
                then {{ cw_add_days(
                    'customer_levels.below_held_level_since',
                    'held_levels.grace_period_days - 1'
                ) }}
        end as membership_level_kept_until,
        case
            when customer_levels.level_rank > customer_levels.qualified_level_rank
                then {{ cw_short_of(
                    'held_levels.min_spend_12m', 'customer_levels.spend_12m', 'decimal(18, 2)'
                ) }}
        end as spend_to_keep_level,
        case
            when customer_levels.level_rank > customer_levels.qualified_level_rank
                then {{ cw_short_of(
                    'held_levels.min_orders_12m', 'customer_levels.orders_12m', dbt.type_int()
                ) }}
        end as orders_to_keep_level,
        held_levels.next_membership_level,
        {#- greatest() skips nulls, so the top level needs its own branch. -#}
        case
            when held_levels.next_membership_level is not null
                then {{ cw_short_of(
                    'held_levels.next_min_spend_12m', 'customer_levels.spend_12m', 'decimal(18, 2)'
                ) }}
        end as spend_to_next_level,
        case
            when held_levels.next_membership_level is not null
                then {{ cw_short_of(
                    'held_levels.next_min_orders_12m', 'customer_levels.orders_12m', dbt.type_int()
                ) }}
        end as orders_to_next_level,
        as_of.as_of_date
    from customer_levels
    cross join as_of
    left join levels_ranked as held_levels
        on customer_levels.level_rank = held_levels.level_rank
    left join levels_ranked as qualified_levels
        on customer_levels.qualified_level_rank = qualified_levels.level_rank
)

select * from final
