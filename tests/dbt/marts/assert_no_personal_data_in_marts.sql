{#-
    Personal data stays out of the marts (docs/privacy.md): no marts model declares a column
    named in seeds/personal_columns.csv, the one list of personal column names. The declared
    columns of every model under models/marts (their contracts) are listed from dbt's graph and
    joined to the seed; returns the offending model.column pairs.
-#}
{%- set declared = [] %}
{%- if execute %}
    {%- for node in graph.nodes.values() %}
        {%- if node.resource_type == 'model' and node.original_file_path.startswith('models/marts/') %}
            {%- for column_name in node.columns %}
                {%- do declared.append((node.name, column_name | lower)) %}
            {%- endfor %}
        {%- endif %}
    {%- endfor %}
{%- endif %}

with

personal_columns as (select lower(column_name) as column_name from {{ ref('personal_columns') }}),

declared_columns as (
    {%- for model_name, column_name in declared %}
        select
            '{{ model_name }}' as model_name,
            '{{ column_name }}' as column_name
        {% if not loop.last %}union all{% endif %}
    {%- else %}
        select
            cast(null as {{ dbt.type_string() }}) as model_name,
            cast(null as {{ dbt.type_string() }}) as column_name
    {%- endfor %}
),

final as (
    select declared_columns.model_name || '.' || declared_columns.column_name as offender
    from declared_columns
    inner join personal_columns
        on declared_columns.column_name = personal_columns.column_name
)

select * from final
