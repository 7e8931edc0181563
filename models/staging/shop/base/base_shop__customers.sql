{#-
    Every raw customer row, typed and standardized, with the reason it cannot be trusted.
    A birth date that cannot be parsed does not reject the customer: birth_date is null and
    has_invalid_birth_date tells (the rest of the row is still good). So does a birth date
    before var('earliest_birth_date') or after the run date (a placeholder such as 0001-01-01).
    Latest delivery wins, as for orders (base_shop__orders): a customer in a later delivery
    (a new e-mail, a consent given or withdrawn) supersedes the older rows
    (staging.superseded_customers); conflicting copies within one delivery are rejected.
    Incremental like base_shop__orders; rows re-checked besides changed deliveries: a signup
    or birth date after the previous run's start (the verdict depends on the run's moment) and
    the rows of customers with an erasure request that still hold a personal value.
-#}
{%- set raw_columns, plan, raw_key = cw_shop_base_model('customers', 'customer_id') -%}

with

{% call cw_incremental_source('customers', plan, raw_key, after_previous_run=['signed_up_at']) %}
    select dedup_key from {{ this }}
    where parsed_birth_date > cast({{ cw_previous_run_started(plan) }} as date)
    union
    select built.dedup_key
    from {{ this }} as built
    inner join {{ source('shop', 'erasure_requests') }} as erased
        on built.customer_id = erased.customer_id
    where built.raw_email is not null
        or built.raw_phone is not null
        or built.raw_full_name is not null
        or built.raw_birth_date is not null
{%- endcall %},

region_mapping as (select * from {{ ref('region_mapping') }}),

typed as (
    select
        {{ cw_raw_row_columns(raw_columns, raw_key) }},
        {{ blank_to_null('customer_id') }} as customer_id,
        {{ parse_timestamp_utc(blank_to_null('signed_up_at')) }} as signed_up_at,
        try_cast({{ blank_to_null('birth_date') }} as date) as parsed_birth_date,
        {{ field_problem(raw_columns) }} as field_problem,
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
        {{ cw_row_content(raw_columns, except_column='customer_id') }} as row_content
    from source
),

standardized as (
    select
        typed.*,
        coalesce(region_mapping.province, typed.province_text) as province,
        coalesce(region_mapping.region, 'Unmapped') as region,
        case
            when typed.parsed_birth_date >= cast('{{ var("earliest_birth_date") }}' as date)
                and typed.parsed_birth_date <= cast({{ run_started_utc() }} as date)
                then typed.parsed_birth_date
        end as birth_date,
        {{ blank_to_null('typed.raw_birth_date') }} is not null
        and not coalesce(
            typed.parsed_birth_date >= cast('{{ var("earliest_birth_date") }}' as date)
            and typed.parsed_birth_date <= cast({{ run_started_utc() }} as date),
            false
        ) as has_invalid_birth_date
    from typed
    left join region_mapping
        on typed.country = region_mapping.country
            and typed.province_key = region_mapping.province_key
),

{{ cw_duplicates_marked('standardized') }},

final as (
    select
        *,
        {{ cw_reject_reason(
            required=['customer_id'],
            rules=cw_timestamp_reject_reasons('signed_up_at', required=false),
        ) }} as reject_reason
    from duplicates_marked
)

select * from final
