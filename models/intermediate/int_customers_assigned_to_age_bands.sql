{#-
    Age band (seeds/tiers/age_bands.csv) of every customer known on the as-of date: whole years
    from the birth date to the as-of date. `unknown` when the birth date is missing or invalid.
    The band is what BI sees; the birth date itself never leaves staging and the contact rule.
-#}
with

birth_dates as (
    {{ cw_birth_dates_of_known_customers() }}
),

age_bands as (select * from {{ ref('age_bands') }}),

ages as (
    select
        customer_id,
        {{ cw_whole_years_between('birth_date', 'as_of_date') }} as age_in_years
    from birth_dates
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
