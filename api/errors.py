"""Every failure a client can cause or meet becomes a JSON ``{"detail": ...}`` with the right status, never a 500.

The core raises its own errors (:mod:`medgpt.engines.base`) without HTTP in them; which status each becomes is
decided here, in :data:`STATUS`, and :data:`ERRORS` documents the same codes in the OpenAPI schema.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.schemas import ErrorBody
from medgpt.engines import (
    EngineError,
    EngineUnavailable,
    GenerationTimeout,
    InvalidOutput,
    ModelNotFound,
    PromptTooLong,
    Unsupported,
)

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


#: The HTTP status of each core error; the first class in this order that the error is an instance of wins,
#: so a subclass (the echo guard's refusal is an InvalidOutput) answers as its family unless listed itself.
STATUS: dict[type[EngineError], int] = {
    ModelNotFound: 404,
    PromptTooLong: 413,
    Unsupported: 501,
    EngineUnavailable: 503,
    GenerationTimeout: 504,
    InvalidOutput: 502,
    EngineError: 502,
}

#: Seconds a client is told to wait when the engine is down and the server named no wait of its own.
RETRY_AFTER = 10

#: The error responses of the model routes, for the OpenAPI schema.
ERRORS = {
    404: {"model": ErrorBody, "description": "Unknown model"},
    413: {"model": ErrorBody, "description": "Text over the configured limit, or too long for the model"},
    422: {"model": ErrorBody, "description": "Invalid request"},
    503: {"model": ErrorBody, "description": "Engine unavailable (Retry-After set)"},
    504: {"model": ErrorBody, "description": "Generation exceeded the configured timeout"},
}


def engine_error_status(exc: EngineError) -> tuple[int, dict[str, str]]:
    """The status and headers answering ``exc``: a 503 says when to retry (the server's wait, if any)."""
    status = next(code for cls, code in STATUS.items() if isinstance(exc, cls))
    headers = {}
    if isinstance(exc, EngineUnavailable):
        wait = RETRY_AFTER if exc.retry_after is None else exc.retry_after
        headers["Retry-After"] = str(max(1, round(wait)))
    return status, headers


async def engine_error(request: Request, exc: EngineError) -> JSONResponse:
    status, headers = engine_error_status(exc)
    log.warning("engine error %s %s: %s", status, type(exc).__name__, exc)
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(EngineError, engine_error)
