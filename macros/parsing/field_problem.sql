{#-
    Problems of a raw row as text, whatever its columns mean: a field longer than
    var('max_field_length') characters ('oversized_field') or a control character other than
    tab, line feed and carriage return in any field ('control_characters'); null when neither.
    Staging models check this before parsing any value, so a megabyte of garbage or a NUL byte
    in one cell quarantines its row instead of reaching a cast, a join key or a BI tool.
-#}
{% macro control_character_pattern() -%}
    [\x{00}-\x{08}\x{0b}\x{0c}\x{0e}-\x{1f}\x{7f}]
{%- endmacro %}

{% macro field_problem(columns) -%}
    case
        when greatest(
            {%- for column in columns %}
            coalesce(length({{ column }}), 0){% if not loop.last %},{% endif %}
            {%- endfor %}
        ) > {{ var('max_field_length') }} then 'oversized_field'
        when {{ cw_matches_pattern(
            "concat_ws(' ', " ~ (columns | join(', ')) ~ ")", control_character_pattern()
        ) }} then 'control_characters'
    end
{%- endmacro %}
