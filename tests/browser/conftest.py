"""Fixtures of the browser tests: a Postgres database per module, an API key, Debian's headless Chromium, and a
fresh browser context per test that records every request (the service worker's too) and console error."""

from __future__ import annotations

import os

import pytest

from service.db import session_scope
from service.keys import create_api_key
from tests.browser.helpers import CHROMIUM, CHROMIUM_ARGS, sync_api
from tests.conftest import empty_database, migrate


@pytest.fixture(scope="module")
def database_url(tmp_path_factory):
    """Postgres only: the pages are the same on SQLite, and a second run of them costs minutes."""
    with empty_database("postgres", tmp_path_factory.mktemp("db")) as url:
        migrate(url)
        yield url


@pytest.fixture(scope="module")
def key(service_env) -> str:
    with session_scope() as session:
        return create_api_key(session, "browser")


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: scripts/test.sh installs Debian's chromium package")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A page in a context of its own (session storage, service worker); page.requests holds every request the
    context made, page.console_errors every console error and uncaught exception."""
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.requests, page.console_errors = [], []
    # On the context: it sees the service worker's requests too, a page does not.
    context.on("request", lambda request: page.requests.append(request))
    page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
    page.on("pageerror", lambda error: page.console_errors.append(str(error)))
    page.set_default_timeout(30_000)
    yield page
    context.close()
