with

checked as (
    select * from {{ ref('base_shop__customers') }}
    where reject_reason is null and not is_superseded
),

final as (
    select
        customer_id,
        signed_up_at,
        cast(signed_up_at as date) as signed_up_date,
        birth_date,
        has_invalid_birth_date,
        gender,
        country,
        province,
        city,
        region,
        email,
        phone,
        full_name,
        acquisition_channel,
        has_marketing_consent,
        source_file,
        source_row
    from checked
)

select * from final
