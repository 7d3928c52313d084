"""The security tests reuse the in-process API fixtures (a client, tenants with keys, settings overrides)."""

from tests.api.conftest import alice, client, env_override, new_tenant, sessions  # noqa: F401 (fixtures)
