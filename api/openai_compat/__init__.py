"""OpenAI's fine-tuning API shape under /openai/v1, so the official `openai` client works unchanged with
`base_url=".../openai/v1"` and one of our API keys. It is a translation layer: the same jobs, files, tenants
and workers as /v1, presented as OpenAI's objects, with OpenAI's error shape. docs/OPENAI.md has the mapping."""

from __future__ import annotations

from fastapi import FastAPI

from api.openai_compat.errors import install_openai_errors
from api.openai_compat.routes import files_router, jobs_router

PREFIX = "/openai/v1"
UPLOAD_PATH = f"{PREFIX}/files"  # exempt from MAX_BODY_BYTES like /v1/files: uploads stream under MAX_UPLOAD_BYTES


def openai_app() -> FastAPI:
    """A sub-application of its own, so that its errors answer in OpenAI's shape and /v1's do not change."""
    app = FastAPI(title="AdaLoRA service: OpenAI-compatible fine-tuning", version="1", docs_url=None,
                  redoc_url=None, openapi_url="/openapi.json", servers=[{"url": PREFIX}])
    app.include_router(files_router)
    app.include_router(jobs_router)
    install_openai_errors(app)
    return app
