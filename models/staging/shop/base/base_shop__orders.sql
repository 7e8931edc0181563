{#-
    Every raw order row, typed, with the reason it cannot be trusted (null when it can).
    Latest delivery wins: when an order_id has rows in several deliveries (raw `_delivery`, the
    delivery's sortable name), the rows of the latest delivery decide (a new status, a
    correction) and the older rows are `is_superseded` (history, staging.superseded_orders),
    never rejects. Within one delivery the rules are those of a single export: the same order
    with different content is `conflicting_duplicate` (every copy of that delivery), an
    identical second copy `exact_duplicate`.
    stg_shop__orders keeps the current rows without a reason, order_rejects the rows with one,
    superseded_orders the superseded ones, so raw rows = accepted + rejected + superseded
    (tests/dbt/staging/assert_raw_rows_accounted_for.sql).
    The first matching reason wins, in the order of the `case` below. Nothing here raises on a
    value: every cast is a try_cast behind a pattern (macros/parsing), money is converted in
    decimal(38) and checked against var('max_order_amount') before it can reach a sum.

    Incremental (macros/incremental): a filtered run takes again every raw row of each order
    that has a row in a new, changed or re-processed delivery or is held from a delivery that
    is gone, plus the rows whose verdict depends on the moment of the run (ordered or changed
    after the previous run started), on the customers table (has_customer_record) or on an
    erasure request; all else in this model is per order, so those rows decide exactly as a
    full refresh would.
-#}
{%- set raw_columns, plan, raw_key = cw_shop_base_model('orders', 'order_id') -%}
{#- Amounts in the order's own currency above this cannot be real in any currency. -#}
{%- set max_original_amount = 10000000000000 -%}

with

known_customers as (
    select distinct {{ blank_to_null('customer_id') }} as customer_id
    from {{ source('shop', 'customers') }}
    where {{ blank_to_null('customer_id') }} is not null
),

customers_file as (
    select count(*) > 0 as has_customers_file from known_customers
),

{% call cw_incremental_source(
    'orders', plan, raw_key, after_previous_run=['ordered_at', 'status_changed_at']
) %}
    select built.dedup_key
    from {{ this }} as built
    cross join customers_file
    left join known_customers
        on built.customer_id = known_customers.customer_id
    where built.has_customer_record <> (known_customers.customer_id is not null)
        or built.has_customers_file <> customers_file.has_customers_file
{%- endcall %},

status_aliases as (select * from {{ ref('order_status_aliases') }}),

channel_aliases as (select * from {{ ref('channel_aliases') }}),

currency_rates as (select * from {{ ref('currency_rates') }}),

typed as (
    select
        {{ cw_raw_row_columns(raw_columns, raw_key) }},
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
        {{ cw_row_content(raw_columns, except_column='order_id') }} as row_content
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

{{ cw_duplicates_marked('standardized') }},

final as (
    select
        *,
        {% call cw_reject_reason(required=['order_id']) %}
            when customer_id is null then 'missing_customer_id'
            {{ cw_timestamp_reject_reasons('ordered_at') }}
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
                or status_changed_at < {{ cw_earliest_plausible_timestamp() }}
                then 'implausible_status_changed_at'
        {%- endcall %} as reject_reason
    from duplicates_marked
)

select * from final
