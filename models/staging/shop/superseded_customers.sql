{{ cw_superseded_rows(ref('base_shop__customers'), cw_shop_raw_columns('customers')) }}
