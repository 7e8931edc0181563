{#-
    An amount (decimal(18, 2)) times an exchange rate, as decimal(18, 2) rounded to cents, or
    null when the product does not fit. Both sides are widened to decimal(38) first: multiplied
    as decimal(18) the engine may overflow and raise (DuckDB: "Overflow in multiplication of
    DECIMAL(18)") on one large amount, which would stop the whole build.
-#}
{% macro convert_money(amount_expr, rate_expr) -%}
    try_cast(
        cast({{ amount_expr }} as decimal(38, 2)) * cast({{ rate_expr }} as decimal(38, 6))
        as decimal(18, 2)
    )
{%- endmacro %}
