"""The dashboard's files are served by the API itself with a policy that lets them reach this origin only, and
none of them names another host (the vendored chart library's licence comment aside)."""

from __future__ import annotations

import re

from api.dashboard import FOLDER

FOREIGN = re.compile(r"(?:https?:)?//[\w-]+\.[\w.-]+")


def test_root_redirects_to_the_dashboard_page(client):
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/dashboard/"
    page = client.get("/dashboard/")
    assert page.status_code == 200 and "<main id=\"view\"" in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy


def test_every_file_the_page_loads_is_served_and_names_no_other_host(client):
    page = client.get("/dashboard/").text
    assets = re.findall(r'(?:src|href)="([^"#:/][^"#:]*)"', page)  # its own files, relative
    assert {"app.js", "style.css", "vendor/uplot/uPlot.iife.min.js", "vendor/uplot/uPlot.min.css"} <= set(assets)
    for asset in assets:
        response = client.get(f"/dashboard/{asset}")
        assert response.status_code == 200, asset
        text = response.text
        if asset.startswith("vendor/"):
            text = re.sub(r"/\*!.*?\*/", "", text, flags=re.S)  # the licence banner names the project's page
        assert FOREIGN.search(text) is None, (asset, FOREIGN.search(text))


def test_the_chart_library_ships_with_its_licence():
    assert "MIT License" in (FOLDER / "vendor" / "uplot" / "LICENSE").read_text()


def test_a_missing_file_is_a_404(client):
    assert client.get("/dashboard/nope.js").status_code == 404
