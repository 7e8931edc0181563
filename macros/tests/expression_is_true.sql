{#-
    Rows for which a SQL boolean `expression` over the model's columns is not true (false or
    null). For invariants that tie columns together, e.g. `frequency = purchase_days_count - 1`.
-#}
{% test expression_is_true(model, expression) %}

select *
from {{ model }}
where not coalesce({{ expression }}, false)

{% endtest %}
