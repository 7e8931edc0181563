{% call cw_trusted_rows(ref('base_shop__orders')) %}
        order_id,
        customer_id,
        ordered_at,
        cast(ordered_at as date) as ordered_date,
        amount,
        amount_original,
        currency,
        discount_amount,
        coalesce(matched_channel, case when channel_key is null then 'unknown' else 'other' end)
            as channel,
        coalesce(matched_status, 'completed') as status,
        case when coalesce(matched_status, 'completed') <> 'completed' then status_changed_at end
            as status_changed_at,
        coalesce(matched_status, 'completed') = 'completed' as is_purchase,
        has_customer_record
{%- endcall %}
