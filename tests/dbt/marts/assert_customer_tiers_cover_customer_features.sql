{#- customer_tiers and customer_features describe exactly the same customers. -#}
with

features as (select customer_id from {{ ref('customer_features') }}),

tiers as (select customer_id from {{ ref('customer_tiers') }})

select
    coalesce(features.customer_id, tiers.customer_id) as customer_id,
    case
        when tiers.customer_id is null then 'missing in customer_tiers'
        else 'missing in customer_features'
    end as problem
from features
full outer join tiers
    on features.customer_id = tiers.customer_id
where features.customer_id is null
    or tiers.customer_id is null
