{#-
    Personal data stays out of the marts (docs/tiers.md, "Privacy"): no marts model declares a
    column that names personal data, except the single contact field of crm_reminders, which
    the CRM contact rule governs. Checked on the contracts of every model under models/marts.
-#}
{%- set personal_columns = [
    'email', 'phone', 'full_name', 'name', 'first_name', 'last_name', 'birth_date',
    'birthday', 'date_of_birth', 'address', 'street', 'contact_address'
] %}
{%- set allowed = {'crm_reminders': ['contact_address']} %}
{%- set offenders = [] %}
{%- if execute %}
    {%- for node in graph.nodes.values() %}
        {%- if node.resource_type == 'model' and node.original_file_path.startswith('models/marts/') %}
            {%- for column_name in node.columns %}
                {%- if column_name | lower in personal_columns
                    and column_name | lower not in allowed.get(node.name, []) %}
                    {%- do offenders.append(node.name ~ '.' ~ column_name) %}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
    {%- endfor %}
{%- endif %}

{%- set offender_list = offenders | join(', ') %}

select '{{ offender_list }}' as personal_data_columns
where '{{ offender_list }}' <> ''
