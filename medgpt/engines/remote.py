"""What every engine that talks to a model server shares: the configured models, the client built once with
the generation timeout, and the mapping from a configured model name to the server's own name for it.

A remote engine refuses a name it was not configured with (:class:`~medgpt.engines.base.ModelNotFound`) before
any request is sent: a server would otherwise serve, or pull, whatever model the caller named.

The client's own timeout bounds each read, not a generation: a server that sends a token every few seconds keeps
a stream open for ever. :meth:`RemoteEngine.deadline` and :meth:`RemoteEngine.before` bound the whole generation
(the request, then every read of the stream) by ``GenerationRequest.timeout``.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Awaitable
from typing import Any, TypeVar

from medgpt.engines.base import Engine, GenerationRequest, GenerationTimeout
from medgpt.settings import ModelSpec

T = TypeVar("T")


class RemoteEngine(Engine):
    """An engine whose models live on a server; ``settings`` is its engine kind's section of the settings."""

    def __init__(self, models: list[ModelSpec], settings: Any, timeout: float = 300.0) -> None:
        super().__init__(models)
        self.settings = settings
        self.timeout = timeout
        self._client = self._connect()

    @abstractmethod
    def _connect(self) -> Any:
        """The server's client, built from ``self.settings`` and ``self.timeout``."""

    def remote_name(self, model: str) -> str:
        """The server's name for the configured model ``model`` (``ModelSpec.remote``, else its own name)."""
        spec = self.spec(model)
        return spec.remote or spec.name

    @staticmethod
    def deadline(request: GenerationRequest) -> float | None:
        """The event-loop time by which ``request`` must be done (None: no timeout)."""
        return None if request.timeout is None else asyncio.get_running_loop().time() + request.timeout

    @staticmethod
    async def before(deadline: float | None, awaitable: Awaitable[T], seconds: float | None = None) -> T:
        """``await awaitable``, cancelled at ``deadline`` (loop time) with :class:`GenerationTimeout` (its message
        names ``seconds``, the request's timeout). Await each step of a stream through it, never the ``yield``,
        so only the engine's own wait is cancelled, not the caller's code."""
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                return await awaitable
        except TimeoutError:
            if not scope.expired():  # the awaitable's own timeout, not the deadline
                raise
            raise GenerationTimeout(
                f"generation exceeded {seconds:g} s" if seconds else "generation exceeded its deadline"
            ) from None

    async def aclose(self) -> None:
        """Close the client's connections; call it on the event loop that used them."""
        await self._client.close()
