{% call cw_trusted_rows(ref('base_shop__customers')) %}
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
        has_marketing_consent
{%- endcall %}
