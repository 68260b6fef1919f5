CREATE TABLE {{ table }} (
{%- for column in columns %}
    {{ column }}{% if !loop.last %},{% endif %}
{%- endfor %}
)
