"""One router per resource. Each carries the full prefix, so route templates (metrics labels) include /v1."""

V1 = "/v1"

# Upper bounds for integer query parameters. A larger value does not fit the column it is compared with (steps
# are INTEGER, ids and offsets BIGINT), and the database refuses the query, which would be a 500 instead of a 422.
MAX_INT = 2**31 - 1
MAX_BIGINT = 2**63 - 1
