{{ cw_superseded_rows(ref('base_shop__order_items'), cw_shop_raw_columns('order_items')) }}
