"""Retries with exponential backoff and full jitter, for judges behind rate-limited APIs.

Why full jitter: several concurrent judge calls that hit a 429 together must not come back together. A
server's ``Retry-After`` is honoured when it is longer than the computed delay.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class Retryable(Exception):
    """A call wrapper asks for another attempt; ``retry_after`` is the server's hint in seconds."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Backoff:
    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Delay before attempt ``attempt + 1`` (attempt counts from 0): uniform in [0, min(max, base *
        2**attempt)]."""
        ceiling = min(self.max_delay, self.base_delay * (2**attempt))
        delay = rng.uniform(0, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_delay))
        return delay


async def with_retries(
    call: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_retry: Callable[[int, Exception, float], None] | None = None,
) -> T:
    """Run ``call``; on :class:`Retryable` wait and try again, up to ``backoff.attempts`` attempts in all."""
    rng = rng or random.Random()
    for attempt in range(backoff.attempts):
        try:
            return await call()
        except Retryable as exc:
            if attempt == backoff.attempts - 1:
                raise
            delay = backoff.delay(attempt, rng, exc.retry_after)
            if on_retry:
                on_retry(attempt + 1, exc, delay)
            await sleep(delay)
    raise AssertionError("unreachable")
