"""One router per resource. Each carries the full prefix, so route templates (metrics labels) include /v1."""

V1 = "/v1"
