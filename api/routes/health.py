"""Liveness (``/health``: the process answers) and readiness (``/ready``: the default model answers)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import GatewayDep
from medgpt.engines import EngineError

router = APIRouter(tags=["health"])

#: Seconds /ready waits for a model that is not warm yet before answering 503.
READY_TIMEOUT = 30.0


@router.get("/health", summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Readiness: 200 once the default model answers, 503 before")
async def ready(gw: GatewayDep) -> JSONResponse:
    if not gw.ready:
        try:
            gw.ready = await asyncio.wait_for(gw.engine.ready(gw.default_model), READY_TIMEOUT)
        except (EngineError, TimeoutError) as exc:
            return JSONResponse(
                {"status": "not ready", "model": gw.default_model, "detail": str(exc) or type(exc).__name__},
                status_code=503,
                headers={"Retry-After": "5"},
            )
    return JSONResponse({"status": "ready", "model": gw.default_model, "engine": gw.engine.name})
