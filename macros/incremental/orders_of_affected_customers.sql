{#-
    Customer-incremental models (int_orders_aggregated_to_customer_days,
    int_orders_joined_to_membership_levels): every row belongs to one customer and depends on
    that customer's orders only, so a filtered run recomputes the customers whose orders changed
    or crossed the as-of date since the last run and keeps the others (macros/incremental).
-#}

{#- The model's config: its unique key and the hooks that keep the incremental state. -#}
{% macro cw_customer_incremental_config(unique_key) -%}
    {{ config(
        unique_key=unique_key,
        pre_hook="{{ cw_incremental_pre_hook('customers') }}",
        post_hook="{{ cw_incremental_post_hook('customers') }}",
    ) }}
{%- endmacro %}

{#-
    The orders (int_orders_filtered_to_as_of_date) such a model reads, as a CTE body: every
    order, or on a filtered run only the orders of the customers cw_affected_customers finds.
    The refs below are what the plan and the filter read (the bookkeeping of deliveries, the
    base orders, the as-of date), named so dbt builds them first.
-#}
{% macro cw_orders_of_affected_customers() -%}
    {%- set plan = cw_incremental_plan('customers') %}
    -- depends_on: {{ source('shop', 'deliveries') }}
    -- depends_on: {{ ref('base_shop__orders') }}
    -- depends_on: {{ ref('stg_shop__orders') }}
    -- depends_on: {{ ref('int_as_of_date') }}
    select * from {{ ref('int_orders_filtered_to_as_of_date') }}
    {%- if plan.mode == 'filter' %}
        where customer_id in ({{ cw_affected_customers(plan) }})
    {%- endif %}
{%- endmacro %}
