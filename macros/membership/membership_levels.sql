{#-
    The membership level rules of seeds/tiers/membership_levels.csv, applied in one place.
    A level is met by a 12-month spend and order count when both reach its min_spend_12m and
    min_orders_12m (docs/tiers.md).
-#}

{#- Join condition: `levels` (membership_levels rows) met by the balances `spend`, `orders`. -#}
{% macro cw_membership_level_met(spend, orders, levels='membership_levels') -%}
    {{ spend }} >= {{ levels }}.min_spend_12m
    and {{ orders }} >= {{ levels }}.min_orders_12m
{%- endmacro %}

{#-
    A CTE body: per `key` of the relation `balances`, the rank of the highest level its balances
    `spend` and `orders` meet, as `rank_column`; rows meeting no level (and, with `where`, rows
    filtered out) have no row.
-#}
{% macro cw_highest_membership_level_met(
    balances, key, spend, orders, rank_column='level_rank', where=none
) -%}
    select
        {{ balances }}.{{ key }},
        max(membership_levels.level_rank) as {{ rank_column }}
    from {{ balances }}
    inner join {{ ref('membership_levels') }} as membership_levels
        on {{ cw_membership_level_met(balances ~ '.' ~ spend, balances ~ '.' ~ orders) }}
    {%- if where %}
    where {{ where }}
    {%- endif %}
    group by {{ balances }}.{{ key }}
{%- endmacro %}

{#-
    What is still missing from the balance `balance` to the threshold `threshold`, never below 0,
    cast to `type` (decimal(18, 2) for spend, the engine's int for orders).
-#}
{% macro cw_short_of(threshold, balance, type) -%}
    cast(greatest({{ threshold }} - {{ balance }}, 0) as {{ type }})
{%- endmacro %}
