{#-
    The contact rule, in one place (docs/tiers.md, "CRM contact rule"): a customer can be
    contacted only when the customers file says they gave marketing consent, and only through
    one channel: e-mail when an address exists, otherwise SMS when a phone number exists.
    Customers without consent or without any address are not here at all, so no marts table can
    leak their contact details. Birth date is kept only for the birthday greeting.
-#}
with

customer_records as (
    {{ cw_records_of_known_customers(['email', 'phone', 'birth_date', 'has_marketing_consent']) }}
),

consenting as (
    select
        customer_id,
        email,
        phone,
        birth_date
    from customer_records
    where has_marketing_consent
        and (email is not null or phone is not null)
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
