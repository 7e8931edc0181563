{{ cw_rejected_rows(ref('base_shop__point_adjustments'), cw_shop_raw_columns('point_adjustments')) }}
