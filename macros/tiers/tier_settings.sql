{#-
    The tier settings (seeds/tiers/tier_settings.csv, one row per setting) pivoted once: one row,
    a typed column per setting. The only place that reads the seed; a CTE body, cross joined
    where a setting is needed: `settings as ({{ cw_tier_settings() }})`.
-#}
{% macro cw_tier_settings() -%}
    {%- set settings = [
        ('membership_window_months', 'window_months', dbt.type_int()),
        ('crm_birthday_lookahead_days', 'birthday_lookahead_days', dbt.type_int()),
        ('crm_upgrade_nudge_max_spend_share', 'upgrade_nudge_max_spend_share', 'double'),
        ('crm_upgrade_nudge_max_orders', 'upgrade_nudge_max_orders', dbt.type_int()),
    ] -%}
    select
    {%- for setting_name, column_name, column_type in settings %}
        cast(
            max(case when setting_name = '{{ setting_name }}' then setting_value end)
            as {{ column_type }}
        ) as {{ column_name }}{{ ',' if not loop.last }}
    {%- endfor %}
    from {{ ref('tier_settings') }}
{%- endmacro %}
