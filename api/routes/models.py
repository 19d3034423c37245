"""``/models``: what can be asked for, per request, with ``model``."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import GatewayDep
from api.errors import ERRORS
from api.schemas import ModelCard, ModelList
from medgpt.engines import Engine, ModelNotFound

router = APIRouter(tags=["models"])


async def _template(engine: Engine, model: str) -> str | None:
    """The name of the model's chat template; None when none can be used (the model's requests then get a 404
    that says why)."""
    try:
        return (await engine.template(model)).name
    except ModelNotFound:
        return None


@router.get("/models", response_model=ModelList, responses={503: ERRORS[503]}, summary="List models")
async def list_models(gw: GatewayDep) -> ModelList:
    models = await gw.engine.models()
    templates = {m.name: await _template(gw.engine, m.name) for m in models}
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
                template=templates[m.name],
            )
            for m in models
        ]
    )
