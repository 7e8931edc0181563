{#-
    Contact lists for CRM, one row per customer and reminder type, as of the as-of date.
    Under the contact rule of int_customer_contacts_filtered_to_consent (docs/tiers.md, "CRM
    contact rule"): only customers who gave marketing consent and left an address are listed,
    with the one channel to use. The address itself is not in this table: the contact export
    (asset crm_contact_lists, docs/privacy.md) joins it on the way out.
    Reminder types (thresholds in seeds/tiers/tier_settings.csv):
    - birthday_greeting: the birthday falls within crm_birthday_lookahead_days after the as-of
      date (29 February birthdays are on 28 February in other years); due on the birthday.
    - win_back: the customer's marketing_strategies row is a win-back action; due now.
    - upgrade_nudge: the next membership level is within reach: the spend still needed is at
      most crm_upgrade_nudge_max_spend_share of its spend threshold and at most
      crm_upgrade_nudge_max_orders orders are still needed; due now.
    - level_retention: the customer keeps a level only thanks to the grace period; due on the
      last day of the grace period.
-#}
with

tiers as (select * from {{ ref('customer_tiers') }}),

contacts as (select * from {{ ref('int_customer_contacts_filtered_to_consent') }}),

membership_levels as (select * from {{ ref('membership_levels') }}),

settings as (
    {{ cw_tier_settings() }}
),

contactable as (
    select
        tiers.*,
        contacts.contact_channel,
        contacts.contact_address,
        contacts.birth_date,
        cast(extract(year from tiers.as_of_date) as {{ dbt.type_int() }})
        - cast(extract(year from contacts.birth_date) as {{ dbt.type_int() }}) as age_in_years
    from tiers
    inner join contacts
        on tiers.customer_id = contacts.customer_id
),

birthdays as (
    select
        customer_id,
        case
            when {{ cw_add_months('birth_date', '12 * age_in_years') }} >= as_of_date
                then {{ cw_add_months('birth_date', '12 * age_in_years') }}
            else {{ cw_add_months('birth_date', '12 * (age_in_years + 1)') }}
        end as next_birthday
    from contactable
    where birth_date is not null
),

birthday_greetings as (
    select
        contactable.customer_id,
        'birthday_greeting' as reminder_type,
        birthdays.next_birthday as due_date,
        'birthday in '
        || {{ cw_as_text(cw_days_between('contactable.as_of_date', 'birthdays.next_birthday')) }}
        || ' days' as reason
    from contactable
    inner join birthdays
        on contactable.customer_id = birthdays.customer_id
    cross join settings
    where {{ cw_days_between('contactable.as_of_date', 'birthdays.next_birthday') }}
        <= settings.birthday_lookahead_days
),

win_backs as (
    select
        customer_id,
        'win_back' as reminder_type,
        as_of_date as due_date,
        lifecycle_stage || ' ' || coalesce(value_tier, 'not_scored')
        || ' customer, last purchase '
        || {{ cw_as_text('days_since_last_purchase') }} || ' days ago: '
        || recommended_action as reason
    from contactable
    where is_win_back_candidate
),

upgrade_nudges as (
    select
        contactable.customer_id,
        'upgrade_nudge' as reminder_type,
        contactable.as_of_date as due_date,
        {{ cw_as_text('contactable.spend_to_next_level') }} || ' more spend and '
        || {{ cw_as_text('contactable.orders_to_next_level') }} || ' more orders to reach '
        || contactable.next_membership_level as reason
    from contactable
    inner join membership_levels as next_levels
        on contactable.next_membership_level = next_levels.membership_level
    cross join settings
    where contactable.has_purchased
        and contactable.spend_to_next_level
        <= settings.upgrade_nudge_max_spend_share * next_levels.min_spend_12m
        and contactable.orders_to_next_level <= settings.upgrade_nudge_max_orders
),

level_retentions as (
    select
        customer_id,
        'level_retention' as reminder_type,
        membership_level_kept_until as due_date,
        {{ cw_as_text('spend_to_keep_level') }} || ' more spend and '
        || {{ cw_as_text('orders_to_keep_level') }} || ' more orders keep '
        || membership_level || ' after its grace period' as reason
    from contactable
    where is_in_grace_period
),

reminders as (
    select * from birthday_greetings
    union all
    select * from win_backs
    union all
    select * from upgrade_nudges
    union all
    select * from level_retentions
),

final as (
    select
        {{ cw_as_text(dbt.hash(dbt.concat([
            'reminders.customer_id', "'|'", 'reminders.reminder_type'
        ]))) }} as reminder_id,
        {{ cw_as_text('reminders.customer_id') }} as customer_id,
        {{ cw_as_text('reminders.reminder_type') }} as reminder_type,
        reminders.due_date,
        {{ cw_as_text('reminders.reason') }} as reason,
        {%- for column in [
            'contact_channel', 'value_tier', 'lifecycle_stage', 'membership_level', 'recommended_action'
        ] %}
            {{ cw_as_text('contactable.' ~ column) }} as {{ column }},
        {%- endfor %}
        contactable.as_of_date
    from reminders
    inner join contactable
        on reminders.customer_id = contactable.customer_id
)

select * from final
