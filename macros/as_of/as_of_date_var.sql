{#-
    The as-of date the caller asked for, as 'YYYY-MM-DD', or '' when none was set.
    Precedence: `--vars '{as_of_date: ...}'` > env CW_AS_OF_DATE > '' (then int_as_of_date uses
    the last accepted order date). A malformed value stops the run before anything is built.
-#}
{% macro as_of_date_var() -%}
    {%- set from_vars = var('as_of_date', '') | string | trim -%}
    {%- set value = from_vars if from_vars not in ('', 'None') else (env_var('CW_AS_OF_DATE', '') | trim) -%}
    {%- if value != '' -%}
        {%- set match = modules.re.match('^([0-9]{4})-([0-9]{2})-([0-9]{2})$', value) -%}
        {%- if not match
              or (match.group(2) | int) < 1 or (match.group(2) | int) > 12
              or (match.group(3) | int) < 1 or (match.group(3) | int) > 31 -%}
            {{ exceptions.raise_compiler_error(
                "CW_AS_OF_DATE='" ~ value ~ "' is not a date. Set it as YYYY-MM-DD "
                ~ "(for example CW_AS_OF_DATE=2025-06-30), or unset it to compute the warehouse "
                ~ "as of the last order date in the data."
            ) }}
        {%- endif -%}
    {%- endif -%}
    {{- value -}}
{%- endmacro %}
