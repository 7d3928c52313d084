"""Postgres connections are opened with the options that keep a worker from hanging on a vanished server."""

from __future__ import annotations

import pytest

from service.db import POSTGRES_CONNECT_ARGS, make_engine
from tests.conftest import postgres_server_url


def connection_parameters(url: str) -> dict[str, str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.connection.dbapi_connection.info.get_parameters()
    finally:
        engine.dispose()


def test_postgres_connections_carry_keepalive_and_write_timeouts():
    url = postgres_server_url() or pytest.skip("TEST_POSTGRES_URL is not set")
    parameters = connection_parameters(url)
    assert {key: parameters.get(key) for key in POSTGRES_CONNECT_ARGS} == {
        key: str(value) for key, value in POSTGRES_CONNECT_ARGS.items()}


def test_an_option_in_the_url_wins_over_ours():
    url = postgres_server_url() or pytest.skip("TEST_POSTGRES_URL is not set")
    separator = "&" if "?" in url else "?"
    parameters = connection_parameters(f"{url}{separator}tcp_user_timeout=5000")
    assert parameters["tcp_user_timeout"] == "5000" and parameters["keepalives_idle"] == "30"
