{#-
    The date the warehouse is computed as of, as a SQL expression of type date.
    Every "days since", "last N days", tenure and tier is measured at this date, and orders
    after it are ignored by every feature (they stay in staging: for a backtest they are the
    holdout). The value itself is decided once, in the model `int_as_of_date`.
-#}
{% macro as_of_date() -%}
    (select as_of_date from {{ ref('int_as_of_date') }})
{%- endmacro %}
