{#-
    The CRM contact rule: every listed customer gave marketing consent in the customers file
    and has an address, and the channel is the one the rule picks (e-mail when there is one,
    else SMS). The address itself is not in the mart: the contact export joins it.
-#}
with

reminders as (select * from {{ ref('crm_reminders') }}),

customers as (select * from {{ ref('stg_shop__customers') }})

select
    reminders.reminder_id,
    reminders.customer_id
from reminders
left join customers
    on reminders.customer_id = customers.customer_id
where customers.customer_id is null
    or not coalesce(customers.has_marketing_consent, false)
    or coalesce(customers.email, customers.phone) is null
    or reminders.contact_channel <> {{ cw_contact_channel('customers.email') }}
