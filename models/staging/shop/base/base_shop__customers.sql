{#-
    Every raw customer row, typed and standardized, with the reason it cannot be trusted.
    A birth date that cannot be parsed does not reject the customer: birth_date is null and
    has_invalid_birth_date tells (the rest of the row is still good).
-#}
with

source as (
    select * from {{ source('shop', 'customers') }}
),

region_mapping as (
    select * from {{ ref('region_mapping') }}
),

typed as (
    select
        _source_file as source_file,
        _source_row as source_row,
        customer_id as raw_customer_id,
        signed_up_at as raw_signed_up_at,
        birth_date as raw_birth_date,
        gender as raw_gender,
        country as raw_country,
        province as raw_province,
        city as raw_city,
        email as raw_email,
        phone as raw_phone,
        full_name as raw_full_name,
        acquisition_channel as raw_acquisition_channel,
        marketing_consent as raw_marketing_consent,
        {{ blank_to_null('customer_id') }} as customer_id,
        {{ parse_timestamp_utc(blank_to_null('signed_up_at')) }} as signed_up_at,
        try_cast({{ blank_to_null('birth_date') }} as date) as birth_date,
        upper({{ blank_to_null('gender') }}) as gender,
        upper(coalesce({{ blank_to_null('country') }}, 'CN')) as country,
        {{ blank_to_null('province') }} as province_text,
        {#- "Guangdong Province" and " guangdong " both mean guangdong -#}
        trim(replace(lower({{ blank_to_null('province') }}), ' province', '')) as province_key,
        {{ blank_to_null('city') }} as city,
        lower({{ blank_to_null('email') }}) as email,
        {{ blank_to_null('phone') }} as phone,
        {{ blank_to_null('full_name') }} as full_name,
        lower({{ blank_to_null('acquisition_channel') }}) as acquisition_channel,
        {{ text_to_boolean('marketing_consent') }} as has_marketing_consent,
        concat_ws(
            '|',
            coalesce(signed_up_at, ''),
            coalesce(birth_date, ''),
            coalesce(gender, ''),
            coalesce(country, ''),
            coalesce(province, ''),
            coalesce(city, ''),
            coalesce(email, ''),
            coalesce(phone, ''),
            coalesce(full_name, ''),
            coalesce(acquisition_channel, ''),
            coalesce(marketing_consent, '')
        ) as row_content
    from source
),

standardized as (
    select
        typed.*,
        coalesce(region_mapping.province, typed.province_text) as province,
        coalesce(region_mapping.region, 'Unmapped') as region,
        typed.raw_birth_date is not null
        and trim(typed.raw_birth_date) <> ''
        and typed.birth_date is null as has_invalid_birth_date
    from typed
    left join region_mapping
        on typed.country = region_mapping.country
            and typed.province_key = region_mapping.province_key
),

duplicates_marked as (
    select
        standardized.*,
        row_number() over (
            partition by customer_id, row_content order by source_file, source_row
        ) as copy_number,
        min(row_content) over (partition by customer_id)
        <> max(row_content) over (partition by customer_id) as has_conflicting_versions
    from standardized
),

final as (
    select
        *,
        case
            when customer_id is null then 'missing_customer_id'
            when has_conflicting_versions then 'conflicting_duplicate'
            when copy_number > 1 then 'exact_duplicate'
            when {{ blank_to_null('raw_signed_up_at') }} is not null
                and signed_up_at is null then 'unparseable_signed_up_at'
        end as reject_reason
    from duplicates_marked
)

select * from final
