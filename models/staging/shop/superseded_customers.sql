{#-
    Raw customers rows that a later delivery replaced: the same customer arrived again
    in a delivery that sorts after theirs, and the latest delivery wins (base_shop__customers).
    Not rejects but history, kept with their raw values, so every raw row is accounted for:
    raw = stg_shop__customers + customer_rejects + superseded_customers.
-#}
with

checked as (
    select * from {{ ref('base_shop__customers') }}
    where is_superseded
),

final as (
    select
        checked.source_file,
        checked.source_row,
        checked.delivery,
        checked.latest_delivery as superseded_by_delivery,
        checked.raw_customer_id as customer_id,
        checked.raw_signed_up_at as signed_up_at,
        checked.raw_birth_date as birth_date,
        checked.raw_gender as gender,
        checked.raw_country as country,
        checked.raw_province as province,
        checked.raw_city as city,
        checked.raw_email as email,
        checked.raw_phone as phone,
        checked.raw_full_name as full_name,
        checked.raw_acquisition_channel as acquisition_channel,
        checked.raw_marketing_consent as marketing_consent
    from checked
)

select * from final
