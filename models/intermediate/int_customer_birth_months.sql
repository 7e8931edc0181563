{#-
    Birth month (1-12) of every customer known on the as-of date, null when the birth date is
    unknown or invalid. Only the month leaves staging: the loyalty points asset needs it for the
    birthday-month bonus, and a month alone does not identify anyone.
-#}
with

birth_dates as (
    {{ cw_birth_dates_of_known_customers() }}
),

final as (
    select
        customer_id,
        cast(extract(month from birth_date) as {{ dbt.type_int() }}) as birth_month
    from birth_dates
)

select * from final
