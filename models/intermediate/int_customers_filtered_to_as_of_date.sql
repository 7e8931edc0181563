{#-
    Every customer known on the as-of date: customers from the customers file who had signed up
    by then (or whose signup time is unknown), plus every customer with an order placed by then
    (exports without a customers file, orders of unknown customers, which staging keeps with
    has_customer_record = false, and the odd customer whose recorded signup is later than an
    order: the order proves they existed). Personal data stays out: see int_customer_contacts_* and
    int_customer_birth_months for the only personal fields used downstream.
-#}
with

customers as (select * from {{ ref('stg_shop__customers') }}),

orders as (select * from {{ ref('int_orders_filtered_to_as_of_date') }}),

registered_by_as_of_date as (
    select customer_id from customers
    where signed_up_date is null or signed_up_date <= {{ as_of_date() }}
),

ordering_customers as (
    select distinct customer_id from orders
),

spine as (
    select customer_id from registered_by_as_of_date
    union
    select customer_id from ordering_customers
),

final as (
    select
        spine.customer_id,
        customers.customer_id is not null as has_customer_record,
        customers.signed_up_date,
        customers.country,
        customers.province,
        customers.city,
        customers.region,
        customers.acquisition_channel,
        coalesce(customers.has_marketing_consent, false) as has_marketing_consent,
        {{ as_of_date() }} as as_of_date
    from spine
    left join customers
        on spine.customer_id = customers.customer_id
)

select * from final
