{#- Read a yes/no text column. Anything not clearly "yes" is false: for consent, silence is no. -#}
{% macro text_to_boolean(text_expr) -%}
    coalesce(lower(trim({{ text_expr }})) in ('true', 't', '1', 'yes', 'y'), false)
{%- endmacro %}
