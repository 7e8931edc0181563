{#-
    Reading numbers defensively. Nothing here can raise on a value: a text that is not a plain
    number gives null, and `number_problem` says why, so the staging models can quarantine the
    row with a precise reason (seeds/reject_reasons.csv) instead of failing the build.

    A plain number is optional sign, digits with at most one dot, optional exponent, nothing
    else: `12`, `-3.5`, `.5`, `1e3`. Thousands separators (`1,234.50`), currency symbols or
    codes (`¥12`, `12 CNY`), `NaN`, `Infinity`, or an exponent beyond what a double holds
    (`1e400`) are not plain numbers. (DuckDB alone would read `1_000` as 1000: the pattern is
    stricter than the engine's cast, on purpose.)
-#}

{% macro plain_number_pattern() -%}
    ^[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]+)?$
{%- endmacro %}

{#-
    A number written for people: digits with thousands separators, spaces or a decimal comma,
    optionally a currency symbol or three-letter code before or after (`1,234.50`, `¥12`,
    `USD 12.50`, `12 元`). Quarantined as formatted, not guessed: `1,234` means one thousand
    in one country and one point two in another.
-#}
{% macro formatted_number_pattern() -%}
    ^([$¥￥€£₩] ?|[A-Za-z]{3} ?)?[+-]?[0-9][0-9,. \x{00a0}]*( ?[A-Za-z]{3}| ?元)?$
{%- endmacro %}

{% macro non_finite_words() -%}
    ('nan', '+nan', '-nan', 'inf', '+inf', '-inf', 'infinity', '+infinity', '-infinity')
{%- endmacro %}

{#- The text as a double when it is a plain, finite number; else null. -#}
{% macro plain_number_as_double(text_expr) -%}
    case
        when {{ cw_matches_pattern(text_expr, plain_number_pattern()) }}
            and abs(try_cast({{ text_expr }} as double)) < 1e300
            then try_cast({{ text_expr }} as double)
    end
{%- endmacro %}

{#-
    Why the text is not a usable number: 'missing' (null or blank), 'non_finite' (NaN, Infinity,
    or too large for a double), 'formatted' (separators, symbols), 'unparseable' (anything
    else), or null when it is a plain finite number. `text_expr` must already be trimmed and
    blank-to-null'ed (blank_to_null).
-#}
{% macro number_problem(text_expr) -%}
    case
        when {{ text_expr }} is null then 'missing'
        when {{ cw_matches_pattern(text_expr, plain_number_pattern()) }}
            then case
                when abs(try_cast({{ text_expr }} as double)) < 1e300 then null
                else 'non_finite'
            end
        when lower({{ text_expr }}) in {{ non_finite_words() }} then 'non_finite'
        when {{ cw_matches_pattern(text_expr, formatted_number_pattern()) }} then 'formatted'
        else 'unparseable'
    end
{%- endmacro %}

{#-
    The text as decimal(18, 2) (rounded half away from zero to cents) when it is a plain number
    whose magnitude is below `max_abs`; else null. The bound keeps every later sum and product
    far inside decimal(18, 2); values above it are rejected by the model as absurd.
-#}
{% macro parse_money(text_expr, max_abs) -%}
    case
        when abs({{ plain_number_as_double(text_expr) }}) <= {{ max_abs }}
            then try_cast({{ text_expr }} as decimal(18, 2))
    end
{%- endmacro %}

{#-
    The text as a bigint when it is a whole number of at most 15 digits, optionally written
    with a zero fraction (`3`, `-2`, `3.0`, as spreadsheets export them); else null. Fifteen
    digits are exact in a double on both engines and far beyond any real quantity or points.
-#}
{% macro parse_whole_number(text_expr) -%}
    case
        when {{ cw_matches_pattern(text_expr, '^[+-]?[0-9]{1,15}([.]0*)?$') }}
            then cast(try_cast({{ text_expr }} as double) as bigint)
    end
{%- endmacro %}
