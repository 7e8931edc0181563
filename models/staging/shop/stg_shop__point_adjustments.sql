{% call cw_trusted_rows(ref('base_shop__point_adjustments'), latest_delivery_wins=false) %}
        adjustment_id,
        customer_id,
        adjusted_at,
        cast(adjusted_at as date) as adjusted_date,
        points,
        reason
{%- endcall %}
