"""The models this server can train: the saved models in MODEL_DIRS (a hub id works too, when the workers
reach the hub, but only the hub knows those)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.deps import TenantDep
from api.errors import AUTHENTICATED_RESPONSES
from api.routes import V1
from api.schemas import ModelPublic, ModelsPublic
from service.model_catalog import server_models

router = APIRouter(prefix=f"{V1}/models", tags=["models"], responses=AUTHENTICATED_RESPONSES)


@router.get("", response_model=ModelsPublic)
async def list_models(_tenant: TenantDep) -> ModelsPublic:
    models = await run_in_threadpool(server_models)  # reads config.json and safetensors headers from disk
    return ModelsPublic(data=[ModelPublic.model_validate(m, from_attributes=True) for m in models])
