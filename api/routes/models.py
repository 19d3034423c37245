"""``/models``: what can be asked for, per request, with ``model``."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import GatewayDep
from api.errors import ERRORS
from api.schemas import ModelCard, ModelList

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelList, responses={503: ERRORS[503]}, summary="List models")
async def list_models(gw: GatewayDep) -> ModelList:
    models = await gw.engine.models()
    return ModelList(
        models=[
            ModelCard(
                name=m.name,
                engine=m.engine,
                quantization=m.quantization,
                size_bytes=m.size_bytes,
                loaded=m.loaded,
                context_length=m.context_length,
                default=m.name == gw.default_model,
                description=str(m.details.get("description", "")),
            )
            for m in models
        ]
    )
