"""Every failure a client can cause or meet becomes a JSON ``{"detail": ...}`` with the right status, never a 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from medgpt.engines import EngineError, EngineUnavailable

log = logging.getLogger("medgpt.api")


def _location(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if p != "body") or "body"


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """One readable sentence per problem, without echoing the (possibly clinical) input back."""
    problems = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            problems.append("the body is not valid JSON (or not UTF-8)")
            continue
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        problems.append(f"{_location(tuple(err.get('loc', ())))}: {msg}")
    return JSONResponse({"detail": "; ".join(problems) or "invalid request"}, status_code=422)


def engine_error_status(exc: EngineError) -> tuple[int, dict[str, str]]:
    headers = {"Retry-After": "10"} if isinstance(exc, EngineUnavailable) else {}
    return exc.status, headers


async def engine_error(request: Request, exc: EngineError) -> JSONResponse:
    status, headers = engine_error_status(exc)
    log.warning("engine error %s %s: %s", status, type(exc).__name__, exc)
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(EngineError, engine_error)
