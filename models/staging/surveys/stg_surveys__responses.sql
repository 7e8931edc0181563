{#- Responses were validated on ingestion (customer_warehouse/ingestion/surveys.py); here only renamed. -#}
with

source as (select * from {{ source('surveys', 'survey_responses') }}),

final as (
    select
        response_id,
        customer_id,
        submitted_at,
        cast(submitted_at as date) as submitted_date,
        nps as nps_score,
        satisfaction as satisfaction_score,
        comment,
        need_tags,
        source_file
    from source
)

select * from final
