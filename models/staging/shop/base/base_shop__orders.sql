{#-
    Every raw order row, typed, with the reason it cannot be trusted (null when it can).
    stg_shop__orders keeps the rows without a reason, order_rejects the others, so
    raw rows = accepted + rejected (tests/dbt/staging/assert_raw_rows_accounted_for.sql).
    The first matching reason wins, in the order of the `case` below. Nothing here raises on a
    value: every cast is a try_cast behind a pattern (macros/parsing), money is converted in
    decimal(38) and checked against var('max_order_amount') before it can reach a sum.
-#}
{%- set raw_columns = [
    'order_id', 'customer_id', 'ordered_at', 'amount', 'currency', 'channel', 'status',
    'status_changed_at', 'discount_amount',
] -%}
{#- Amounts in the order's own currency above this cannot be real in any currency. -#}
{%- set max_original_amount = 10000000000000 -%}
{%- set earliest = "cast('" ~ var('earliest_plausible_date') ~ "' as timestamp)" -%}

with

source as (
    select * from {{ source('shop', 'orders') }}
),

status_aliases as (
    select * from {{ ref('order_status_aliases') }}
),

channel_aliases as (
    select * from {{ ref('channel_aliases') }}
),

currency_rates as (
    select * from {{ ref('currency_rates') }}
),

known_customers as (
    select distinct {{ blank_to_null('customer_id') }} as customer_id
    from {{ source('shop', 'customers') }}
    where {{ blank_to_null('customer_id') }} is not null
),

customers_file as (
    select count(*) > 0 as has_customers_file from known_customers
),

typed as (
    select
        _source_file as source_file,
        _source_row as source_row,
        _load_error as load_error,
        _raw_line as raw_line,
        order_id as raw_order_id,
        customer_id as raw_customer_id,
        ordered_at as raw_ordered_at,
        amount as raw_amount,
        currency as raw_currency,
        channel as raw_channel,
        status as raw_status,
        status_changed_at as raw_status_changed_at,
        discount_amount as raw_discount_amount,
        {{ blank_to_null('order_id') }} as order_id,
        {{ blank_to_null('customer_id') }} as customer_id,
        {{ parse_timestamp_utc(blank_to_null('ordered_at')) }} as ordered_at,
        {{ parse_timestamp_utc(blank_to_null('status_changed_at')) }} as status_changed_at,
        {{ number_problem(blank_to_null('amount')) }} as amount_problem,
        {{ plain_number_as_double(blank_to_null('amount')) }} as amount_as_double,
        {{ parse_money(blank_to_null('amount'), max_original_amount) }} as amount_original,
        {{ number_problem(blank_to_null('discount_amount')) }} as discount_problem,
        case
            when {{ blank_to_null('discount_amount') }} is null then 0
            else {{ parse_money(blank_to_null('discount_amount'), max_original_amount) }}
        end as discount_amount_original,
        {{ field_problem(raw_columns) }} as field_problem,
        upper(coalesce({{ blank_to_null('currency') }}, '{{ var("reporting_currency") }}'))
            as currency,
        lower({{ blank_to_null('channel') }}) as channel_key,
        lower({{ blank_to_null('status') }}) as status_key,
        concat_ws(
            '|',
            coalesce(customer_id, ''),
            coalesce(ordered_at, ''),
            coalesce(amount, ''),
            coalesce(currency, ''),
            coalesce(channel, ''),
            coalesce(status, ''),
            coalesce(status_changed_at, ''),
            coalesce(discount_amount, '')
        ) as row_content
    from source
),

standardized as (
    select
        typed.*,
        status_aliases.status as matched_status,
        channel_aliases.channel as matched_channel,
        currency_rates.rate_to_reporting,
        {{ convert_money('typed.amount_original', 'currency_rates.rate_to_reporting') }}
            as amount,
        {{ convert_money('typed.discount_amount_original', 'currency_rates.rate_to_reporting') }}
            as discount_amount,
        customers_file.has_customers_file,
        known_customers.customer_id is not null as has_customer_record
    from typed
    cross join customers_file
    left join status_aliases
        on typed.status_key = status_aliases.raw_status
    left join channel_aliases
        on typed.channel_key = channel_aliases.raw_channel
    left join currency_rates
        on typed.currency = currency_rates.currency
    left join known_customers
        on typed.customer_id = known_customers.customer_id
),

duplicates_marked as (
    select
        standardized.*,
        row_number() over (
            partition by order_id, row_content order by source_file, source_row
        ) as copy_number,
        min(row_content) over (partition by order_id)
        <> max(row_content) over (partition by order_id) as has_conflicting_versions
    from standardized
),

final as (
    select
        *,
        case
            when load_error is not null then 'malformed_row'
            when field_problem is not null then field_problem
            when order_id is null then 'missing_order_id'
            when has_conflicting_versions then 'conflicting_duplicate'
            when copy_number > 1 then 'exact_duplicate'
            when customer_id is null then 'missing_customer_id'
            when {{ blank_to_null('raw_ordered_at') }} is null then 'missing_ordered_at'
            when ordered_at is null then 'unparseable_ordered_at'
            when ordered_at > {{ run_started_utc() }} then 'future_ordered_at'
            when ordered_at < {{ earliest }} then 'implausible_ordered_at'
            when amount_problem = 'missing' then 'missing_amount'
            when amount_problem = 'non_finite' then 'non_finite_amount'
            when amount_problem = 'formatted' then 'formatted_amount'
            when amount_problem is not null then 'unparseable_amount'
            when amount_as_double < 0 then 'negative_amount'
            when rate_to_reporting is null then 'unknown_currency'
            when amount is null or amount > {{ var('max_order_amount') }} then 'absurd_amount'
            when discount_problem <> 'missing' then 'unparseable_discount_amount'
            when discount_amount is null
                or discount_amount < 0
                or discount_amount > {{ var('max_order_amount') }}
                then 'implausible_discount_amount'
            when status_key is not null and matched_status is null then 'unknown_status'
            when {{ blank_to_null('raw_status_changed_at') }} is not null
                and status_changed_at is null then 'unparseable_status_changed_at'
            when status_changed_at > {{ run_started_utc() }}
                or status_changed_at < {{ earliest }} then 'implausible_status_changed_at'
        end as reject_reason
    from duplicates_marked
)

select * from final
