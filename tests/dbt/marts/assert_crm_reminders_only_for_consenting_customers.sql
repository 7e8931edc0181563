{#-
    The CRM contact rule: every listed customer gave marketing consent in the customers file,
    and the address is theirs (their e-mail, or their phone when they have no e-mail).
-#}
with

reminders as (
    select * from {{ ref('crm_reminders') }}
),

customers as (
    select * from {{ ref('stg_shop__customers') }}
)

select
    reminders.reminder_id,
    reminders.customer_id
from reminders
left join customers
    on reminders.customer_id = customers.customer_id
where customers.customer_id is null
    or not coalesce(customers.has_marketing_consent, false)
    or reminders.contact_address <> coalesce(customers.email, customers.phone)
