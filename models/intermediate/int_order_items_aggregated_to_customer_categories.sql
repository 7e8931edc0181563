{#-
    Spend per customer and product category, from the lines of purchases (completed orders) by
    the as-of date. Lines of products missing from the catalogue, or without a category, count
    under `unknown`. category_rank = 1 is the favourite category: the most spend, ties to the
    larger quantity, then the category name. Empty when no order_items file was supplied.
-#}
with

order_items as (select * from {{ ref('stg_shop__order_items') }}),

products as (select * from {{ ref('stg_shop__products') }}),

orders as (select * from {{ ref('int_orders_filtered_to_as_of_date') }}),

purchase_lines as (
    select
        orders.customer_id,
        coalesce(products.category, 'unknown') as category,
        order_items.quantity,
        order_items.line_amount
    from order_items
    inner join orders
        on order_items.order_id = orders.order_id
    left join products
        on order_items.product_id = products.product_id
    where orders.is_purchase
),

category_totals as (
    select
        customer_id,
        category,
        count(*) as lines_count,
        sum(quantity) as quantity,
        cast(sum(line_amount) as decimal(18, 2)) as spend
    from purchase_lines
    group by customer_id, category
),

final as (
    select
        customer_id,
        category,
        lines_count,
        quantity,
        spend,
        row_number() over (
            partition by customer_id
            order by spend desc, quantity desc, category asc
        ) as category_rank
    from category_totals
)

select * from final
