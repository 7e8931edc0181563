{#-
    A CTE body: every customer known on the as-of date with the birth date of their customer
    record (null when unknown, invalid or without a record) and the as-of date
    (cw_records_of_known_customers). The birth date is personal: read here, it stays inside the
    model that reduces it (a birth month, an age band) and is never a column of its own relation.
-#}
{% macro cw_birth_dates_of_known_customers() -%}
    {{ return(cw_records_of_known_customers(['birth_date'])) }}
{%- endmacro %}
