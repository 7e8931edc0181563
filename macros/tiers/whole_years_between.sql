{#-
    Completed years from `start_date` to `end_date` (an age on a day): the difference of the
    years, less one when the end's month and day come before the start's. Null when either is
    null. Plain `extract`, the same on every engine.
-#}
{% macro cw_whole_years_between(start_date, end_date) -%}
    (
        extract(year from {{ end_date }}) - extract(year from {{ start_date }})
        - case
            when extract(month from {{ end_date }}) * 100 + extract(day from {{ end_date }})
                < extract(month from {{ start_date }}) * 100 + extract(day from {{ start_date }})
                then 1
            else 0
        end
    )
{%- endmacro %}
