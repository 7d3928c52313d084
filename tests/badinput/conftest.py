"""The bad-input corpus runs against the same in-process API as tests/api (its own database per module)."""

from tests.api.conftest import alice, client, env_override, new_tenant, sessions  # noqa: F401
