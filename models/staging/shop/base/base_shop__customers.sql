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
{{ config(
    unique_key=['source_file', 'source_row'],
    pre_hook="{{ cw_incremental_pre_hook('raw_rows') }}",
    post_hook="{{ cw_incremental_post_hook('raw_rows', 'customers') }}",
) }}
{%- set raw_columns = [
    'customer_id', 'signed_up_at', 'birth_date', 'gender', 'country', 'province', 'city',
    'email', 'phone', 'full_name', 'acquisition_channel', 'marketing_consent',
] -%}
{%- set earliest = "cast('" ~ var('earliest_plausible_date') ~ "' as timestamp)" -%}
{%- set plan = cw_incremental_plan('raw_rows') -%}
{%- set raw_key = cw_raw_dedup_key(blank_to_null('customer_id')) -%}

-- depends_on: {{ source('shop', 'deliveries') }}
-- depends_on: {{ source('shop', 'erasure_requests') }}

with

{%- if plan.mode == 'filter' %}

{{ cw_changed_deliveries('customers', plan) }},

affected_keys as (
    {{ cw_keys_of_changed_deliveries('customers', raw_key) }}
    union
    select dedup_key from {{ this }}
    where signed_up_at > {{ cw_previous_run_started(plan) }}
        or parsed_birth_date > cast({{ cw_previous_run_started(plan) }} as date)
    union
    select built.dedup_key
    from {{ this }} as built
    inner join {{ source('shop', 'erasure_requests') }} as erased
        on built.customer_id = erased.customer_id
    where built.raw_email is not null
        or built.raw_phone is not null
        or built.raw_full_name is not null
        or built.raw_birth_date is not null
    union
    {{ cw_keys_of_erased_lines() }}
),
{%- endif %}

source as (
    select * from {{ source('shop', 'customers') }}
    {%- if plan.mode == 'filter' %}
        where {{ raw_key }} in (select dedup_key from affected_keys)
    {%- endif %}
),

region_mapping as (
    select * from {{ ref('region_mapping') }}
),

typed as (
    select
        _source_file as source_file,
        _source_row as source_row,
        _delivery as delivery,
        _file_sha256 as file_sha256,
        _load_error as load_error,
        _raw_line as raw_line,
        {{ raw_key }} as dedup_key,
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

duplicates_marked as (
    select
        standardized.*,
        max(standardized.delivery) over (partition by standardized.dedup_key) as latest_delivery,
        standardized.delivery
        < max(standardized.delivery) over (partition by standardized.dedup_key) as is_superseded,
        row_number() over (
            partition by standardized.dedup_key, standardized.delivery, standardized.row_content
            order by standardized.source_row
        ) as copy_number,
        min(standardized.row_content)
            over (
                partition by standardized.dedup_key, standardized.delivery
            )
        <> max(standardized.row_content) over (
            partition by standardized.dedup_key, standardized.delivery
        ) as has_conflicting_versions
    from standardized
),

final as (
    select
        *,
        case
            when is_superseded then null
            when load_error is not null then 'malformed_row'
            when field_problem is not null then field_problem
            when customer_id is null then 'missing_customer_id'
            when has_conflicting_versions then 'conflicting_duplicate'
            when copy_number > 1 then 'exact_duplicate'
            when {{ blank_to_null('raw_signed_up_at') }} is not null
                and signed_up_at is null then 'unparseable_signed_up_at'
            when signed_up_at > {{ run_started_utc() }} then 'future_signed_up_at'
            when signed_up_at < {{ earliest }} then 'implausible_signed_up_at'
        end as reject_reason
    from duplicates_marked
)

select * from final
