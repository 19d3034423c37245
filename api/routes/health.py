"""Liveness (``/health``: the process answers) and readiness (``/ready``: the default model answers, and its engine
is still reachable).

``/ready`` is what a load balancer or an orchestrator polls to decide whether to route to this replica, so it must
turn 503 when the engine goes away (an Ollama or OpenAI-compatible server stopped, the weights gone), not only
before the first warm-up. The first check warms the default model (a one-token generation, which loads it); after
that the engine is re-checked by listing its models (cheap: no generation, no wait behind a running one), at most
once every :data:`RECHECK_SECONDS`, and the answer is cached in between so that frequent probes cost nothing.
The cache lives on the app (``app.state.readiness``), one per gateway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from api.deps import Gateway, GatewayDep
from api.errors import client_message
from medgpt.engines import EngineError, ModelNotFound

log = logging.getLogger("medgpt.api")

router = APIRouter(tags=["health"])

#: Seconds /ready waits for a model that is not warm yet before answering 503.
READY_TIMEOUT = 30.0
#: Seconds an answer of /ready is reused before the engine is checked again; also the Retry-After of its 503.
RECHECK_SECONDS = 5.0
#: Seconds the engine has to list its models on a re-check before it counts as unreachable.
PROBE_TIMEOUT = 5.0


class Readiness:
    """Whether one gateway's default model can be served, checked at most once per ``ttl`` seconds.

    :meth:`problem` answers None when ready, else a sentence a client may read (no paths, URLs or upstream text:
    :func:`api.errors.client_message`). Concurrent callers share one check."""

    def __init__(self, ttl: float = RECHECK_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._checked_at: float | None = None
        self._problem: str | None = None
        self._lock = asyncio.Lock()

    async def problem(self, gw: Gateway) -> str | None:
        async with self._lock:
            if self._checked_at is not None and self.clock() - self._checked_at < self.ttl:
                return self._problem
            problem = await self._check(gw)
            if problem != self._problem and self._checked_at is not None:
                if problem is None:
                    log.info("ready again: model %s on %s", gw.default_model, gw.engine.name)
                else:
                    log.warning("not ready: model %s on %s: %s", gw.default_model, gw.engine.name, problem)
            self._problem, self._checked_at = problem, self.clock()
            return problem

    @staticmethod
    async def _check(gw: Gateway) -> str | None:
        try:
            if not gw.ready:  # first: warm the default model (loads it), as the start-up warm-up does
                gw.ready = await asyncio.wait_for(gw.engine.ready(gw.default_model), READY_TIMEOUT)
                return None
            served = await asyncio.wait_for(gw.engine.models(), PROBE_TIMEOUT)
            if gw.default_model not in {m.name for m in served}:
                raise ModelNotFound(f"model {gw.default_model!r} is not served by the {gw.engine.name} engine now")
            return None
        except EngineError as exc:
            log.debug("readiness check failed: %s: %s (cause: %r)", type(exc).__name__, exc, exc.__cause__)
            return client_message(exc)
        except TimeoutError:
            return f"the {gw.engine.name} engine did not answer in time"


def get_readiness(request: Request) -> Readiness:
    """The app's :class:`Readiness`, made on first use (a test may set ``app.state.readiness`` beforehand)."""
    state = request.app.state
    if getattr(state, "readiness", None) is None:
        state.readiness = Readiness()
    return state.readiness


@router.get("/health", summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Readiness: 200 while the default model can be served, 503 + Retry-After while not",
    responses={503: {"description": "Not ready: the model is loading or its engine is unreachable (Retry-After)"}},
)
async def ready(gw: GatewayDep, readiness: Annotated[Readiness, Depends(get_readiness)]) -> JSONResponse:
    """200 once the default model has answered, for as long as its engine stays reachable (re-checked every
    few seconds); 503 with `Retry-After` before that and whenever the engine cannot be reached."""
    problem = await readiness.problem(gw)
    if problem is not None:
        return JSONResponse(
            {"status": "not ready", "model": gw.default_model, "detail": problem},
            status_code=503,
            headers={"Retry-After": str(max(1, round(readiness.ttl)))},
        )
    return JSONResponse({"status": "ready", "model": gw.default_model, "engine": gw.engine.name})
