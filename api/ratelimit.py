"""Per-client rate limits: requests per minute, and generated tokens per minute (the ``limits`` library).

A client is the key's name (its address with keys off; see :mod:`api.security`). Before a request does any work,
the client's request count is taken and its token budget checked; the tokens an answer generated
(``usage.completion_tokens``) are charged to the client when the answer is produced — for a stream, when its
``result`` event is — so a client over its tokens is refused from its next request on. Over either limit → 429
with ``Retry-After``: the seconds until the client's window resets, from the limiter's window stats.

Fixed windows, each opened by a client's first hit and lasting a minute: two counters per client, and the reset
time of a window is exact, which is what ``Retry-After`` reports. The counters live in ``rate_limits.storage``
(``memory://``: this process; ``redis://…``: shared by replicas); the limiter belongs to the app
(``app.state.rate_limiter``), so two apps in one process count separately. The check before a request runs in a
worker thread when the storage is remote; the charge after an answer is one short call where the answer is made.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextvars import ContextVar
from functools import partial
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.errors import StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from api.schemas import ErrorBody
from api.security import ClientDependency
from medgpt.settings import RateLimits

log = logging.getLogger("medgpt.api")

#: Seconds a client is told to wait when the counters' storage does not answer.
STORAGE_RETRY_AFTER = 5

#: The 429 of the rate-limited routes, for the OpenAPI schema.
RESPONSES: dict[int | str, dict[str, Any]] = {
    429: {"model": ErrorBody, "description": "Over the client's requests or generated tokens per minute "
          "(Retry-After: seconds until its window resets)"},
}  # fmt: skip

def responses(config: RateLimits) -> dict[int | str, dict[str, Any]]:
    """The statuses this module adds to a rate-limited route, for the schema: a 429 only when a limit is on."""
    return RESPONSES if config.requests_per_minute > 0 or config.tokens_per_minute > 0 else {}


#: Charges the current request's generated tokens to its client; set per request by :func:`limited`.
_charge: ContextVar[Callable[[int], None] | None] = ContextVar("medgpt_charge_tokens", default=None)


class Refused(Exception):
    """A client over one of its limits: why, and in how many seconds its window resets."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


def _seconds_to_reset(limiter: FixedWindowRateLimiter, item: RateLimitItem, client: str) -> int:
    """Whole seconds until ``client``'s window of ``item`` resets (at least 1)."""
    reset = limiter.get_window_stats(item, client).reset_time
    return max(1, math.ceil(reset - time.time()))


class RateLimiter:
    """Both limits of every client of one app; a limit of 0 is off (no counter kept for it)."""

    def __init__(self, config: RateLimits) -> None:
        # Namespaced: with equal amounts the two items would otherwise share one counter per client.
        self.requests = (RateLimitItemPerMinute(config.requests_per_minute, namespace="medgpt-requests")
                         if config.requests_per_minute > 0 else None)  # fmt: skip
        self.tokens = (RateLimitItemPerMinute(config.tokens_per_minute, namespace="medgpt-tokens")
                       if config.tokens_per_minute > 0 else None)  # fmt: skip
        self._limiter = None
        #: memory:// counts in this process (no I/O); any other storage is a network round trip.
        self.in_process = True
        if self.requests or self.tokens:
            # wrap_exceptions: a storage that does not answer raises StorageError, whatever its client library
            storage = storage_from_string(config.storage, wrap_exceptions=True)
            self.in_process = isinstance(storage, MemoryStorage)
            self._limiter = FixedWindowRateLimiter(storage)

    def admit(self, client: str) -> None:
        """Count one request of ``client``; :class:`Refused` when it is over either limit. The token budget is
        checked first and costs nothing, so a client refused for tokens does not also use up requests."""
        limiter = self._limiter
        if limiter is None:
            return
        if self.tokens and not limiter.test(self.tokens, client):
            wait = _seconds_to_reset(limiter, self.tokens, client)
            raise Refused(f"rate limit: this client has used its {self.tokens.amount:,} generated tokens per "
                          f"minute; retry in {wait} s", wait)  # fmt: skip
        if self.requests and not limiter.hit(self.requests, client):
            wait = _seconds_to_reset(limiter, self.requests, client)
            raise Refused(f"rate limit: this client is over {self.requests.amount:,} requests per minute; "
                          f"retry in {wait} s", wait)  # fmt: skip

    def charge(self, client: str, tokens: int) -> None:
        """Count ``tokens`` generated for ``client``. All of them are counted, past the budget too (a fixed
        window's hit always adds its cost), so one long answer uses up the rest of the minute."""
        if self._limiter is None or self.tokens is None or tokens <= 0:
            return
        try:
            self._limiter.hit(self.tokens, client, cost=tokens)
        except StorageError as exc:  # the answer is already made: it is delivered, the failure logged
            log.warning("rate limit storage failed while charging %d tokens to %s: %s", tokens, client,
                        type(exc.storage_error).__name__)  # fmt: skip


def charge_tokens(tokens: int) -> None:
    """Charge the tokens of an answer to the client of the current request (no-op outside a limited route)."""
    charge = _charge.get()
    if charge is not None:
        charge(tokens)


def limited(client: ClientDependency):
    """The dependency of the rate-limited routes: names the client with ``client`` (which may answer 401 first),
    admits it or answers 429 (503 when the counters' storage is down), and arranges for the answer's tokens to
    be charged to it."""

    # Depends as the default, not in Annotated: with postponed annotations FastAPI would look ``client`` up in
    # the module's globals, and it is this closure's.
    async def rate_limit(request: Request, name: str = Depends(client)) -> str:
        limiter: RateLimiter = request.app.state.rate_limiter
        try:
            if limiter.in_process:
                limiter.admit(name)
            else:  # a network round trip: kept off the event loop
                await run_in_threadpool(limiter.admit, name)
        except Refused as exc:
            log.warning("429 %s %s for client %s: %s", request.method, request.url.path, name, exc.detail)
            raise HTTPException(429, exc.detail, headers={"Retry-After": str(exc.retry_after)}) from None
        except StorageError as exc:
            log.error("rate limit storage failed: %s", type(exc.storage_error).__name__)
            raise HTTPException(503, "rate limiting is unavailable; retry shortly",
                                headers={"Retry-After": str(STORAGE_RETRY_AFTER)}) from None  # fmt: skip
        _charge.set(partial(limiter.charge, name))
        return name

    return rate_limit
