"""The web dashboard: static files (api/dashboard/) served at /dashboard/ by this process, same origin as the
REST API they call. A Content-Security-Policy lets the pages load and connect to this server only."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

FOLDER = Path(__file__).parent / "dashboard"
# Inline style attributes (bar widths) are the only thing allowed beyond this origin's own files.
CSP = ("default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
       "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


class DashboardFiles(StaticFiles):
    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def install_dashboard(app: FastAPI) -> None:
    app.mount("/dashboard", DashboardFiles(directory=FOLDER, html=True), name="dashboard")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/")
