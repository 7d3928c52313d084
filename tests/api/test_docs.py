"""/docs and /redoc work on a machine without internet: their pages name no other host and every asset they
load is served here; the OpenAPI document declares the Bearer scheme so Swagger UI's Authorize button works."""

from __future__ import annotations

import re

import pytest

ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']|url:\s*["']([^"']+)["']""")


def referenced(html: str) -> list[str]:
    return [a or b for a, b in ASSET.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_assets_served_here(client, page):
    response = client.get(page)
    assert response.status_code == 200
    html = response.text
    assert re.search(r"(?:https?:)?//\w", html) is None, "the page names another host"
    urls = referenced(html)
    scripts = [u for u in urls if u.endswith(".js")]
    assert scripts, f"{page} loads no script: {urls}"
    for url in urls:
        assert url.startswith("/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > (100_000 if url.endswith(".js") else 100), url


def test_swagger_ui_reads_this_servers_openapi_and_sends_no_spec_to_a_validator(client):
    html = client.get("/docs").text
    assert "url: '/openapi.json'" in html
    assert '"validatorUrl": null' in html


def test_openapi_declares_bearer_on_v1_operations_only(client):
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": schema["components"]["securitySchemes"]["bearerAuth"]
        ["description"]}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            expected = [{"bearerAuth": []}] if path.startswith("/v1/") else None
            assert operation.get("security") == expected, (method, path)
    assert "/v1/models" in schema["paths"]
