{{ cw_rejected_rows(ref('base_shop__products'), cw_shop_raw_columns('products')) }}
