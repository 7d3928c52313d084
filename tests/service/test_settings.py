"""Settings: embedded defaults, comma-separated folder lists, the broker choice, production guards."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings

SERVICE_VARS = ("DATABASE_URL", "BROKER_URL", "REDIS_URL", "MODEL_DIRS", "DATA_DIRS", "ENV")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for name in SERVICE_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env file from the checkout


def test_defaults_are_the_embedded_mode():
    settings = Settings()
    assert settings.database_url.startswith("sqlite:///")
    assert settings.effective_broker_url.startswith("sqla+sqlite:///")
    assert settings.model_dirs == []


def test_redis_url_becomes_the_broker_unless_a_broker_is_given(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    assert Settings().effective_broker_url == "redis://cache:6379/0"
    monkeypatch.setenv("BROKER_URL", "amqp://rabbit//")
    assert Settings().effective_broker_url == "amqp://rabbit//"


def test_folder_lists_are_comma_separated(monkeypatch, tmp_path):
    monkeypatch.setenv("MODEL_DIRS", f"{tmp_path}/a, {tmp_path}/b")
    assert [p.name for p in Settings().model_dirs] == ["a", "b"]


def test_production_refuses_the_embedded_database(monkeypatch):
    monkeypatch.setenv("ENV", "production")
    with pytest.raises(ValidationError, match="needs DATABASE_URL pointing at Postgres"):
        Settings()
