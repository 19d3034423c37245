"""API keys: who is calling, answered before any work is done.

With ``auth.required`` on, ``/ask``, ``/summarize``, ``/models`` and ``/metrics`` need a key, sent as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; anything else is a 401 with ``WWW-Authenticate: Bearer``.
Keys are configured by their SHA-256 digest only (``auth.keys``; ``python -m api.keys new <name>`` makes one), so a
leaked config file leaks no key; the presented key is hashed and compared with every configured digest in constant
time. The client is then known by the key's *name*, which is what rate limits and logs use; the key itself is never
stored, logged or echoed. With keys off (the local-development default) a client is its network address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import HTTPException, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.schemas import ErrorBody
from medgpt.settings import ApiKey, Settings

log = logging.getLogger("medgpt.api")

#: The header a key can come in instead of ``Authorization: Bearer``.
API_KEY_HEADER = "X-API-Key"
MISSING = f"an API key is required: send 'Authorization: Bearer <key>' or '{API_KEY_HEADER}: <key>'"
INVALID = "the API key is not valid"
#: What a refused client is told to use (RFC 6750).
CHALLENGE = {"WWW-Authenticate": "Bearer"}

#: The 401 of the routes behind a key, for the OpenAPI schema.
RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No API key, or one that is not valid (WWW-Authenticate set)"},
}

# Declared as security schemes so /docs has an "Authorize" button; auto_error off: a missing or malformed
# header is answered by this module's own 401, one message for both ways of sending a key.
_bearer = HTTPBearer(auto_error=False, description="An API key from `python -m api.keys new <name>`.")
_api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="The same key, in this header.")


def digest(key: str) -> str:
    """The SHA-256 hex digest a key is configured by."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_holder(keys: list[ApiKey], presented: str | None) -> str | None:
    """The name of the configured key ``presented`` is, or None. Every digest is compared (constant time each),
    so neither the timing nor the order of the list tells which prefix of a digest matched."""
    if not presented:
        return None
    wanted = digest(presented)
    holder = None
    for key in keys:
        if hmac.compare_digest(wanted, key.sha256):
            holder = key.name
    return holder


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request carries: the Bearer credentials, else the X-API-Key header."""
    scheme, credentials = get_authorization_scheme_param(authorization)
    if scheme.lower() == "bearer" and credentials:
        return credentials
    return api_key or None


def authenticate(keys: list[ApiKey], headers: Headers) -> str:
    """The key holder's name, or an HTTPException 401 (missing or invalid key)."""
    presented = presented_key(headers.get("authorization"), headers.get(API_KEY_HEADER))
    if presented is None:
        raise HTTPException(401, MISSING, headers=CHALLENGE)
    name = key_holder(keys, presented)
    if name is None:
        raise HTTPException(401, INVALID, headers=CHALLENGE)
    return name


def client_address(request: Request) -> str:
    """The client's network address: behind a proxy, uvicorn's ``--proxy-headers`` makes it the real one."""
    return request.client.host if request.client else "unknown"


async def key_holder_client(
    request: Request,
    # Declared for the OpenAPI schema; the header values themselves are read in authenticate().
    _bearer_credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    _api_key: Annotated[str | None, Security(_api_key_header)],
) -> str:
    """Keys on: the name of the key the request carries (401 without a valid one)."""
    try:
        name = authenticate(request.app.state.gateway.settings.auth.keys, request.headers)
    except HTTPException as exc:
        log.warning("401 %s %s from %s: %s", request.method, request.url.path, client_address(request), exc.detail)
        raise
    request.state.client = name
    return name


async def address_client(request: Request) -> str:
    """Keys off: the client is its address."""
    request.state.client = client_address(request)
    return request.state.client


ClientDependency = Callable[..., Coroutine[Any, Any, str]]


def client_dependency(settings: Settings) -> ClientDependency:
    """The dependency naming the client of a request: by key when keys are required, else by address. Chosen
    once at start-up, so the OpenAPI schema declares the key schemes only where keys are asked for."""
    return key_holder_client if settings.auth.required else address_client


def responses(settings: Settings) -> dict[int | str, dict[str, Any]]:
    """The statuses this module adds to a protected route, for the schema: a 401 only when keys are on."""
    return RESPONSES if settings.auth.required else {}


class KeyRequired:
    """ASGI middleware putting a mounted app (``/metrics``, a Prometheus app outside FastAPI's routing and so out
    of reach of a dependency) behind the same keys. Other paths pass through untouched."""

    def __init__(self, app: ASGIApp, settings: Settings, prefix: str) -> None:
        self.app = app
        self.keys = settings.auth.keys
        self.prefix = prefix.rstrip("/")

    def _covers(self, scope: Scope) -> bool:
        path = scope["path"].removeprefix(scope.get("root_path", "") or "")
        return path == self.prefix or path.startswith(self.prefix + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._covers(scope):
            try:
                authenticate(self.keys, Headers(scope=scope))
            except HTTPException as exc:
                client = scope.get("client")
                log.warning("401 %s %s from %s: %s", scope["method"], scope["path"], client[0] if client else "unknown",
                            exc.detail)  # fmt: skip
                await JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def protect_mount(app, settings: Settings, prefix: str) -> None:
    """Keys on: requests under ``prefix`` need a key (a no-op with keys off)."""
    if settings.auth.required:
        app.add_middleware(KeyRequired, settings=settings, prefix=prefix)


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps the gateway to this machine. A host name other than ``localhost`` is
    taken as reachable from elsewhere: it resolves to whatever the network says."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_exposed(settings: Settings) -> None:
    """The start-up warnings about access: keys off on an address others can reach, or keys on and none set."""
    auth = settings.auth
    if not auth.required and not is_loopback(settings.host):
        log.warning(
            "!!! API KEYS ARE OFF and the gateway listens on %s:%d: anyone who can reach this port can read and "
            "use it, clinical text included. Create a key (python -m api.keys new <name>), list its digest under "
            "auth.keys and set auth.required: true (MEDGPT_AUTH__REQUIRED=true), or listen on 127.0.0.1 only. !!!",
            settings.host, settings.port,
        )  # fmt: skip
    if auth.required and not auth.keys:
        log.warning("API keys are required but none is configured (auth.keys is empty): every protected route "
                    "answers 401. Create one with: python -m api.keys new <name>")  # fmt: skip
