"""Every failure a client can cause or meet becomes a JSON ``{"detail": ...}`` with the right status, never a 500.

The core raises its own errors (:mod:`medgpt.engines.base`) without HTTP in them; which status each becomes is
decided here, in :data:`STATUS`, and :data:`ERRORS` documents the same codes in the OpenAPI schema.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

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
    400: {"model": ErrorBody, "description": "The body could not be read (not UTF-8), or Content-Length is not a number"},
    404: {"model": ErrorBody, "description": "Unknown model"},
    413: {"model": ErrorBody, "description": "Body, text or an option over the configured limit; a prompt too long "
          "for the model; or a request whose work (chunks x max_tokens) is over the per-request budget"},
    422: {"model": ErrorBody, "description": "Invalid request"},
    501: {"model": ErrorBody, "description": "The engine cannot enforce an output constraint the request needs"},
    502: {"model": ErrorBody, "description": "The model's output was unusable (e.g. the prompt echoed back, refused)"},
    503: {"model": ErrorBody, "description": "Engine unavailable, or its queue full (Retry-After set)"},
    504: {"model": ErrorBody, "description": "The request ran past the configured timeout"},
}  # fmt: skip


def engine_error_status(exc: EngineError) -> tuple[int, dict[str, str]]:
    """The status and headers answering ``exc``: a 503 says when to retry (the server's wait, if any)."""
    status = next(code for cls, code in STATUS.items() if isinstance(exc, cls))
    headers = {}
    if isinstance(exc, EngineUnavailable):
        wait = RETRY_AFTER if exc.retry_after is None else exc.retry_after
        headers["Retry-After"] = str(max(1, round(wait)))
    return status, headers


#: What a client is told for each kind of engine error whose own message cannot be passed on; the first class in
#: this order that the error is an instance of wins (as in :data:`STATUS`).
PLAIN: dict[type[EngineError], str] = {
    ModelNotFound: "the requested model is not available on this server",
    PromptTooLong: "the prompt has too many tokens for the model's context",
    Unsupported: "this request needs something the model's engine does not support",
    EngineUnavailable: "the model's engine is unavailable; retry later",
    GenerationTimeout: "generation exceeded the configured timeout",
    InvalidOutput: "the model's output could not be used",
    EngineError: "the model's engine failed",
}

#: A location on the server or behind it: a URL (``scheme://``), a path starting with ``/``, ``~/``, ``./``,
#: ``../`` or a drive letter, a relative path to a file (``dir/name.ext``), a ``Path(...)`` repr.
_LOCATION = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://"
    r"|(?:^|(?<=[\s'\"(\[=:,]))(?:~|\.{1,2})?/"
    r"|\b[A-Za-z]:\\"
    r"|[\w-]+/[\w./-]*\.[A-Za-z]\w{0,11}\b"
    r"|Path\("
)


#: The longest engine message passed on as it is (the core's own are one sentence).
MAX_PASSED = 300


def client_message(exc: EngineError) -> str:
    """What a client is told about ``exc``, the one place every error body and SSE ``error`` event takes it from.

    The engine's own message is passed on only when the core composed it from what it knows (model names, token
    counts, limits) in one sentence: not when it wraps another exception (its text is a library's or an upstream server's, which
    can quote URLs, paths or the provider's raw answer), and not when it names a location (a weights path, a
    backend URL). Anything else gets the plain sentence of its kind (:data:`PLAIN`); the full text goes to the
    server log at DEBUG (:func:`engine_error`)."""
    text = str(exc)
    wraps = exc.__cause__ is not None or (exc.__context__ is not None and not exc.__suppress_context__)
    if text and len(text) <= MAX_PASSED and not wraps and not _LOCATION.search(text):
        return text
    return next(message for cls, message in PLAIN.items() if isinstance(exc, cls))


def log_engine_error(status: int, exc: EngineError) -> None:
    """The error in the server log: its kind and client message at WARNING, the engine's full text (paths, URLs,
    the provider's words and the cause) only at DEBUG."""
    log.warning("engine error %s %s: %s", status, type(exc).__name__, client_message(exc))
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    log.debug("engine error %s %s in full: %s%s", status, type(exc).__name__, exc,
              f" (from {type(cause).__name__}: {cause})" if cause is not None else "")  # fmt: skip


async def engine_error(request: Request, exc: EngineError) -> JSONResponse:
    status, headers = engine_error_status(exc)
    log_engine_error(status, exc)
    return JSONResponse({"detail": client_message(exc)}, status_code=status, headers=headers)


async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    """A 405 whose ``Allow`` names every method the path serves: Starlette's names only the first route that
    matched the path (``POST`` for ``/ask``, which also serves ``GET``)."""
    path = request.scope.get("path", "")
    methods = sorted({m for route in request.app.routes if isinstance(route, APIRoute) and route.path_regex.match(path)
                      for m in route.methods})  # fmt: skip
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": ", ".join(methods)})


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(EngineError, engine_error)
    app.add_exception_handler(405, method_not_allowed)
