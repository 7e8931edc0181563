with

checked as (
    select * from {{ ref('base_shop__customers') }}
    where reject_reason is not null
),

final as (
    select
        source_file,
        source_row,
        reject_reason,
        load_error,
        raw_line,
        raw_customer_id as customer_id,
        raw_signed_up_at as signed_up_at,
        raw_birth_date as birth_date,
        raw_gender as gender,
        raw_country as country,
        raw_province as province,
        raw_city as city,
        raw_email as email,
        raw_phone as phone,
        raw_full_name as full_name,
        raw_acquisition_channel as acquisition_channel,
        raw_marketing_consent as marketing_consent
    from checked
)

select * from final
