"""/docs (Swagger UI) and /redoc served from this server's own files, and the Bearer scheme in the OpenAPI
document so Swagger UI's Authorize button sends the key.

FastAPI's own pages load their JS and CSS from a CDN, so they are blank on a machine without internet. The
assets here come from the fastapi-offline package (Swagger UI: Apache-2.0, ReDoc: MIT), mounted as they are, except
ReDoc's bundle: its sidebar footer loads Redocly's logo from their CDN, so it is served with a blank image instead.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from api.routes import V1

DOCS_ASSETS = "/docs-assets"
BEARER = "bearerAuth"
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
BLANK_IMAGE = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"


def _asset_folder() -> Path:
    # find_spec, not an import: the package's __init__ would build a FastAPI app of its own
    spec = find_spec("fastapi_offline")
    assert spec is not None and spec.submodule_search_locations, "fastapi-offline is a dependency (pyproject.toml)"
    return Path(spec.submodule_search_locations[0]) / "static"


def install_docs(app: FastAPI) -> None:
    """Call on an app made with docs_url=None and redoc_url=None."""
    # Before the mount, which would answer every path under DOCS_ASSETS. The browser test sees any request that
    # still leaves the server (a bundle whose logo moved).
    redoc_bundle = (_asset_folder() / "redoc.standalone.js").read_text(encoding="utf-8")
    redoc_bundle = redoc_bundle.replace(REDOC_LOGO, BLANK_IMAGE)

    @app.get(f"{DOCS_ASSETS}/redoc-offline.js", include_in_schema=False)
    async def redoc_js() -> Response:
        return Response(redoc_bundle, media_type="text/javascript", headers={"Cache-Control": "public, max-age=3600"})

    app.mount(DOCS_ASSETS, StaticFiles(directory=_asset_folder()), name="docs-assets")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{title} - Swagger UI",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            # no badge that sends the spec to validator.swagger.io; the key survives a reload of the page
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True})

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url, title=f"{title} - ReDoc",
                              redoc_js_url=f"{DOCS_ASSETS}/redoc-offline.js",
                              redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False)

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {BEARER: {
                "type": "http", "scheme": "bearer",
                "description": "an API key (`adalora-svc create-key`), sent as `Authorization: Bearer <key>`"}}
            for path, operations in schema["paths"].items():
                if path.startswith(f"{V1}/"):  # health and Prometheus stay open
                    for operation in operations.values():
                        operation["security"] = [{BEARER: []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
