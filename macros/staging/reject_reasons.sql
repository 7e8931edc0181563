{#-
    The quarantine verdict of a base model (models/staging/shop/base): a `case` whose first
    matching `when` gives the row's reject_reason, null when the row can be trusted. Codes are
    explained in seeds/reject_reasons.csv.
-#}

{#- `{% call cw_reject_reason(required=[...]) %} when ... {% endcall %} as reject_reason`: the
    rules every shop export shares come first (a superseded row is history, not a reject; then
    malformed_row, then field_problem, then missing_<column> for each of `required`, the key
    columns, in their order; then conflicting_duplicate unless `conflicts` is false, then
    exact_duplicate), then the entity's own `when`s of the call block, in their order. Without
    a call block (`{{ cw_reject_reason(...) }}`) the entity's own `when`s are `rules`, if any.
    `latest_delivery_wins`: false for a model without is_superseded. -#}
{% macro cw_reject_reason(required=[], conflicts=true, latest_delivery_wins=true, rules='') -%}
    case
            {%- if latest_delivery_wins %}
            when is_superseded then null
            {%- endif %}
            when load_error is not null then 'malformed_row'
            when field_problem is not null then field_problem
            {%- for column in required %}
            when {{ column }} is null then 'missing_{{ column }}'
            {%- endfor %}
            {%- if conflicts %}
            when has_conflicting_versions then 'conflicting_duplicate'
            {%- endif %}
            when copy_number > 1 then 'exact_duplicate'
            {%- if caller is defined %}{{ caller() }}{% elif rules %}
            {{ rules }}
            {%- endif %}
        end
{%- endmacro %}

{#- The `when`s of a timestamp column: missing_<column> (only when `required`),
    unparseable_<column> (a value that is not a timestamp), future_<column> (after the run
    started) and implausible_<column> (before var('earliest_plausible_date')). Reads the parsed
    `column` and the raw text raw_<column>. -#}
{% macro cw_timestamp_reject_reasons(column, required=true) -%}
    {%- if required -%}
            when {{ blank_to_null('raw_' ~ column) }} is null then 'missing_{{ column }}'
            when {{ column }} is null then 'unparseable_{{ column }}'
    {%- else -%}
            when {{ blank_to_null('raw_' ~ column) }} is not null
                and {{ column }} is null then 'unparseable_{{ column }}'
    {%- endif %}
            when {{ column }} > {{ run_started_utc() }} then 'future_{{ column }}'
            when {{ column }} < {{ cw_earliest_plausible_timestamp() }} then 'implausible_{{ column }}'
{%- endmacro %}

{#- var('earliest_plausible_date') as a timestamp literal: earlier dates are placeholders. -#}
{% macro cw_earliest_plausible_timestamp() -%}
    cast('{{ var("earliest_plausible_date") }}' as timestamp)
{%- endmacro %}
