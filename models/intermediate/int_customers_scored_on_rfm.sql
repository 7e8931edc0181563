{#-
    RFM scores (1-5) of every customer with at least one purchase by the as-of date.
    - Measures: recency = days since the last purchase day (fewer is better), frequency =
      purchase days (several orders on one day are one purchase occasion), monetary = revenue
      (completed orders, net of refunds and cancellations).
    - Each measure is ranked across buyers with percent_rank() = (rank - 1) / (buyers - 1), from
      worst to best; equal values share the lowest rank of their group, so equal customers get
      equal scores, and a large group of equal customers (the one-time buyers, say) gets the
      score where the group starts instead of being split arbitrarily like ntile() would.
    - The score is the highest `score` in seeds/tiers/rfm_score_bins.csv whose
      min_percent_rank is at or below the customer's percent rank (quintiles by default).
-#}
with

purchase_stats as (select * from {{ ref('int_orders_aggregated_to_customers') }}),

rfm_score_bins as (select * from {{ ref('rfm_score_bins') }}),

buyers as (
    select
        customer_id,
        days_since_last_purchase,
        purchase_days_count,
        revenue
    from purchase_stats
    where purchase_days_count > 0
),

percent_ranks as (
    select
        customer_id,
        days_since_last_purchase,
        purchase_days_count,
        revenue,
        percent_rank() over (order by days_since_last_purchase desc) as recency_percent_rank,
        percent_rank() over (order by purchase_days_count) as frequency_percent_rank,
        percent_rank() over (order by revenue) as monetary_percent_rank
    from buyers
),

scores as (
    select
        percent_ranks.customer_id,
        max(
            case
                when percent_ranks.recency_percent_rank >= rfm_score_bins.min_percent_rank
                    then rfm_score_bins.score
            end
        ) as recency_score,
        max(
            case
                when percent_ranks.frequency_percent_rank >= rfm_score_bins.min_percent_rank
                    then rfm_score_bins.score
            end
        ) as frequency_score,
        max(
            case
                when percent_ranks.monetary_percent_rank >= rfm_score_bins.min_percent_rank
                    then rfm_score_bins.score
            end
        ) as monetary_score
    from percent_ranks
    cross join rfm_score_bins
    group by percent_ranks.customer_id
),

final as (
    select
        percent_ranks.customer_id,
        percent_ranks.days_since_last_purchase,
        percent_ranks.purchase_days_count,
        percent_ranks.revenue,
        cast(percent_ranks.recency_percent_rank as double) as recency_percent_rank,
        cast(percent_ranks.frequency_percent_rank as double) as frequency_percent_rank,
        cast(percent_ranks.monetary_percent_rank as double) as monetary_percent_rank,
        cast(scores.recency_score as {{ dbt.type_int() }}) as recency_score,
        cast(scores.frequency_score as {{ dbt.type_int() }}) as frequency_score,
        cast(scores.monetary_score as {{ dbt.type_int() }}) as monetary_score,
        cast(
            scores.recency_score + scores.frequency_score + scores.monetary_score
            as {{ dbt.type_int() }}
        ) as rfm_total_score,
        {{ cw_as_text('scores.recency_score') }}
        || {{ cw_as_text('scores.frequency_score') }}
        || {{ cw_as_text('scores.monetary_score') }} as rfm_cell
    from percent_ranks
    inner join scores
        on percent_ranks.customer_id = scores.customer_id
)

select * from final
