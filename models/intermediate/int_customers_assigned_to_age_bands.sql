{#-
    Age band (seeds/tiers/age_bands.csv) of every customer known on the as-of date: whole years
    from the birth date to the as-of date. `unknown` when the birth date is missing or invalid.
    The band is what BI sees; the birth date itself never leaves staging and the contact rule.
-#}
with

customers as (
    select * from {{ ref('int_customers_filtered_to_as_of_date') }}
),

customer_records as (
    select * from {{ ref('stg_shop__customers') }}
),

age_bands as (
    select * from {{ ref('age_bands') }}
),

ages as (
    select
        customers.customer_id,
        {{ cw_whole_years_between('customer_records.birth_date', 'customers.as_of_date') }}
            as age_in_years
    from customers
    left join customer_records
        on customers.customer_id = customer_records.customer_id
),

final as (
    select
        ages.customer_id,
        ages.age_in_years,
        coalesce(age_bands.age_band, 'unknown') as age_band
    from ages
    left join age_bands
        on ages.age_in_years between age_bands.min_age and age_bands.max_age
)

select * from final
