{#-
    A CTE body: every customer known on the as-of date (int_customers_filtered_to_as_of_date)
    with the birth date of their customer record (null when unknown, invalid or without a
    record) and the as-of date. The birth date is personal: read here, it stays inside the model
    that reduces it (a birth month, an age band) and is never a column of its own relation.
-#}
{% macro cw_birth_dates_of_known_customers() -%}
    select
        customers.customer_id,
        customer_records.birth_date,
        customers.as_of_date
    from {{ ref('int_customers_filtered_to_as_of_date') }} as customers
    left join {{ ref('stg_shop__customers') }} as customer_records
        on customers.customer_id = customer_records.customer_id
{%- endmacro %}
