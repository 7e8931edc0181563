{% call cw_trusted_rows(ref('base_shop__redemptions')) %}
        redemption_id,
        customer_id,
        redeemed_at,
        cast(redeemed_at as date) as redeemed_date,
        points
{%- endcall %}
