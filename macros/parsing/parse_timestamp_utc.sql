{#-
    Parse a text timestamp into a UTC `timestamp`, or null when it cannot be parsed.
    - A value with an offset or zone (`+08:00`, `+0800`, `Z`, `UTC`) is converted to UTC.
    - A value without one is read in `var('source_timezone')` (default UTC).
    - A bare date (`2024-03-01`) is midnight of that day.
-#}
{% macro parse_timestamp_utc(text_expr) -%}
    {{ return(adapter.dispatch('parse_timestamp_utc', 'customer_warehouse')(text_expr)) }}
{%- endmacro %}

{% macro timestamp_has_zone_pattern() -%}
    '[0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)? ?([+-][0-9]{2}(:?[0-9]{2})?|Z|UTC)$'
{%- endmacro %}

{% macro duckdb__parse_timestamp_utc(text_expr) -%}
    {%- set source_tz = var('source_timezone', 'UTC') -%}
    case
        when regexp_matches({{ text_expr }}, {{ timestamp_has_zone_pattern() }})
            then try_cast({{ text_expr }} as timestamptz) at time zone 'UTC'
        {%- if source_tz | upper == 'UTC' %}
        else try_cast({{ text_expr }} as timestamp)
        {%- else %}
        else timezone('{{ source_tz }}', try_cast({{ text_expr }} as timestamp)) at time zone 'UTC'
        {%- endif %}
    end
{%- endmacro %}

{% macro spark__parse_timestamp_utc(text_expr) -%}
    {#- The Spark session runs in UTC (profiles.yml / tests), so a cast with an offset is UTC. -#}
    {%- set source_tz = var('source_timezone', 'UTC') -%}
    case
        when {{ text_expr }} rlike {{ timestamp_has_zone_pattern() }}
            then try_cast({{ text_expr }} as timestamp)
        {%- if source_tz | upper == 'UTC' %}
        else try_cast({{ text_expr }} as timestamp)
        {%- else %}
        else to_utc_timestamp(try_cast({{ text_expr }} as timestamp), '{{ source_tz }}')
        {%- endif %}
    end
{%- endmacro %}
