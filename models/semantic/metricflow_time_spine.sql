{#-
    One row per day: the time spine MetricFlow joins metrics onto (cumulative metrics, days
    without orders). From var('earliest_plausible_date') to the end of 2050, so every date the
    staging models accept has its day. dbt's own date_spine macro: the same SQL on DuckDB and
    Spark.
-#}
with

days as (
    {{ dbt.date_spine(
        'day',
        "cast('" ~ var('earliest_plausible_date') ~ "' as date)",
        "cast('2051-01-01' as date)",
    ) }}
),

final as (
    select cast(date_day as date) as date_day
    from days
)

select * from final
