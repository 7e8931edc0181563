{#-
    The contact rule's channel (docs/tiers.md, "CRM contact rule"): e-mail when the customer left
    an address, otherwise SMS (the customer then has a phone number).
-#}
{% macro cw_contact_channel(email) -%}
    case when {{ email }} is not null then 'email' else 'sms' end
{%- endmacro %}
