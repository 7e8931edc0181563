{#-
    One row: the date the warehouse is computed as of (read everywhere through the macro
    `as_of_date()`). It is the requested date (`--vars as_of_date` or env CW_AS_OF_DATE), else
    the last accepted order date, else the run date when there are no orders at all.
-#}
{%- set requested = as_of_date_var() -%}
{%- set requested_date = "cast('" ~ requested ~ "' as date)" if requested else "cast(null as date)" -%}

with

orders as (select ordered_date from {{ ref('stg_shop__orders') }}),

last_order as (
    select max(ordered_date) as last_order_date from orders
),

final as (
    select
        coalesce({{ requested_date }}, last_order_date, cast({{ run_started_utc() }} as date))
            as as_of_date,
        case
            when {{ requested_date }} is not null then 'requested'
            when last_order_date is not null then 'last_order_date'
            else 'run_date'
        end as as_of_date_source,
        last_order_date
    from last_order
)

select * from final
