{#-
    Channel mix per customer with at least one purchase (completed order) by the as-of date.
    The channel columns are the known channels (the var `channels`, which
    seeds/channel_aliases.csv maps raw spellings onto); `other` gathers the rest, including orders whose channel
    is unknown. A customer is omni-channel when they bought in more than one known channel.
    The preferred channel has the most purchases; ties go to the higher spend, then the name.
-#}
{%- set known_channels = var('channels') %}
{%- set known_channel_list = "'" ~ known_channels | join("', '") ~ "'" %}
with

orders as (select * from {{ ref('int_orders_filtered_to_as_of_date') }}),

purchases as (
    select
        customer_id,
        case
            when channel in ({{ known_channel_list }}) then channel
            else 'other'
        end as channel_group,
        channel,
        amount
    from orders
    where is_purchase
),

channel_totals as (
    select
        customer_id,
        channel,
        count(*) as orders_count,
        sum(amount) as revenue
    from purchases
    group by customer_id, channel
),

channel_ranks as (
    select
        customer_id,
        channel,
        row_number() over (
            partition by customer_id
            order by orders_count desc, revenue desc, channel asc
        ) as channel_rank
    from channel_totals
),

preferred as (
    select
        customer_id,
        channel as preferred_channel
    from channel_ranks
    where channel_rank = 1
),

pivoted as (
    select
        customer_id,
        count(*) as orders_count,
        {%- for channel in known_channels + ['other'] %}
            sum(case when channel_group = '{{ channel }}' then 1 else 0 end)
                as {{ channel }}_orders,
        {%- endfor %}
        count(distinct case when channel <> 'unknown' then channel end) as channels_count
    from purchases
    group by customer_id
),

final as (
    select
        pivoted.customer_id,
        pivoted.orders_count,
        {%- for channel in known_channels + ['other'] %}
            pivoted.{{ channel }}_orders,
            cast(pivoted.{{ channel }}_orders as double) / pivoted.orders_count
                as {{ channel }}_orders_share,
        {%- endfor %}
        pivoted.channels_count,
        pivoted.channels_count > 1 as is_omni_channel,
        preferred.preferred_channel
    from pivoted
    inner join preferred
        on pivoted.customer_id = preferred.customer_id
)

select * from final
