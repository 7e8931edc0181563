{#-
    `amount / divisor` as money: decimal(18, 2), rounded half up, identically on every engine.
    A plain cast of the quotient does not do that: DuckDB divides decimals in double precision
    (130.95 / 2 = 65.474999... -> 65.47) while Spark divides exactly (65.475 -> 65.48). Working
    in cents makes the half exact in both, so both give 65.48. Null when divisor is 0 or null.
    For non-negative amounts (revenue, spend).
-#}
{% macro cw_divide_money(amount, divisor) -%}
    case
        when ({{ divisor }}) <> 0
            then cast(floor(({{ amount }}) * 100 / ({{ divisor }}) + 0.5) / 100 as decimal(18, 2))
    end
{%- endmacro %}
