"""The FastAPI app: routers under /v1, OpenAI's fine-tuning API shape under /openai/v1 (api/openai_compat), health
and Prometheus at the root, readable errors, OpenAPI at /docs and /redoc (served from local files, api/docs.py), the
web dashboard at /dashboard/ (api/dashboard.py).

Run it with `uvicorn api.main:app` (or `adalora-svc serve`). Tables come from migrations, never from here.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.body_limit import BodyLimit
from api.dashboard import install_dashboard
from api.docs import install_docs
from api.errors import install_error_handlers
from api.monitoring import JobsByStatus, RequestMetrics, make_registry
from api.openai_compat import PREFIX as OPENAI_PREFIX
from api.openai_compat import UPLOAD_PATH as OPENAI_UPLOAD_PATH
from api.openai_compat import openai_app
from api.routes import artifacts, checkpoints, events, files, health, jobs, metrics, models, ranks
from service.db import dispose_async_engine
from service.settings import get_settings

V1_ROUTERS = (models.router, files.router, jobs.router, events.router, metrics.router, ranks.router, checkpoints.router,
              artifacts.router)


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield
    await dispose_async_engine()  # close pooled connections on shutdown


def create_app() -> FastAPI:
    app = FastAPI(title="AdaLoRA fine-tuning service", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Submit AdaLoRA fine-tuning jobs, watch loss and rank allocation, download adapters.")
    install_docs(app)
    install_dashboard(app)
    for router in V1_ROUTERS:
        app.include_router(router)
    app.include_router(health.router)
    app.mount(OPENAI_PREFIX, openai_app())  # OpenAI's fine-tuning API shape, for the `openai` client
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=get_settings().max_body_bytes, exempt=[("POST", files.UPLOAD_PATH),
                                                                           ("POST", OPENAI_UPLOAD_PATH)])
    app.state.jobs_by_status = JobsByStatus()
    app.state.metrics_registry = make_registry(app.state.jobs_by_status)
    app.add_middleware(RequestMetrics, registry=app.state.metrics_registry)
    return app


app = create_app()
