{#-
    The contact rule, in one place (docs/tiers.md, "CRM contact rule"): a customer can be
    contacted only when the customers file says they gave marketing consent, and only through
    one channel: e-mail when an address exists, otherwise SMS when a phone number exists.
    Customers without consent or without any address are not here at all, so no marts table can
    leak their contact details. Birth date is kept only for the birthday greeting.
-#}
with

customers as (
    select * from {{ ref('int_customers_filtered_to_as_of_date') }}
),

customer_records as (
    select * from {{ ref('stg_shop__customers') }}
),

consenting as (
    select
        customers.customer_id,
        customer_records.email,
        customer_records.phone,
        customer_records.birth_date
    from customers
    inner join customer_records
        on customers.customer_id = customer_records.customer_id
    where customer_records.has_marketing_consent
        and (customer_records.email is not null or customer_records.phone is not null)
),

final as (
    select
        customer_id,
        {{ cw_contact_channel('email') }} as contact_channel,
        coalesce(email, phone) as contact_address,
        birth_date
    from consenting
)

select * from final
