{{ cw_rejected_rows(ref('base_shop__orders'), cw_shop_raw_columns('orders')) }}
