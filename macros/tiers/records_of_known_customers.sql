{#-
    A CTE body: every customer known on the as-of date (int_customers_filtered_to_as_of_date)
    with the `columns` of their customer record (stg_shop__customers; null without a record)
    and the as-of date. The record holds personal data: what is read here stays inside the
    model that reduces it (a contact channel, a birth month, an age band).
-#}
{% macro cw_records_of_known_customers(columns) -%}
    select
        customers.customer_id,
        {%- for column in columns %}
        customer_records.{{ column }},
        {%- endfor %}
        customers.as_of_date
    from {{ ref('int_customers_filtered_to_as_of_date') }} as customers
    left join {{ ref('stg_shop__customers') }} as customer_records
        on customers.customer_id = customer_records.customer_id
{%- endmacro %}
