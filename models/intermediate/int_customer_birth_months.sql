{#-
    Birth month (1-12) of every customer known on the as-of date, null when the birth date is
    unknown or invalid. Only the month leaves staging: the loyalty points asset needs it for the
    birthday-month bonus, and a month alone does not identify anyone.
-#}
with

customers as (
    select * from {{ ref('int_customers_filtered_to_as_of_date') }}
),

customer_records as (
    select * from {{ ref('stg_shop__customers') }}
),

final as (
    select
        customers.customer_id,
        cast(extract(month from customer_records.birth_date) as {{ dbt.type_int() }})
            as birth_month
    from customers
    left join customer_records
        on customers.customer_id = customer_records.customer_id
)

select * from final
