{#-
    A running sum of `expr` per `partition_by` in the order of `order_by`, over the rows up to and
    including this one (`until='current row'`) or up to the one before (`'1 preceding'`).
-#}
{% macro cw_running_sum(expr, partition_by, order_by, until='current row') -%}
    sum({{ expr }}) over (
        partition by {{ partition_by }} order by {{ order_by }}
        rows between unbounded preceding and {{ until }}
    )
{%- endmacro %}
