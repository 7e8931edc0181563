{{ cw_rejected_rows(ref('base_shop__redemptions'), cw_shop_raw_columns('redemptions')) }}
