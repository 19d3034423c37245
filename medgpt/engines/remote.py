"""What every engine that talks to a model server shares: the configured models, the client built once with
the generation timeout, and the mapping from a configured model name to the server's own name for it.

A remote engine refuses a name it was not configured with (:class:`~medgpt.engines.base.ModelNotFound`) before
any request is sent: a server would otherwise serve, or pull, whatever model the caller named.

The client's own timeout bounds each read, not a generation: a server that sends a token every few seconds keeps
a stream open for ever. :func:`~medgpt.engines.base.deadline` and :func:`~medgpt.engines.base.before` bound the
whole generation (the request, then every read of the stream) by ``GenerationRequest.timeout``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from medgpt.engines.base import Engine
from medgpt.settings import ModelSpec


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

    async def aclose(self) -> None:
        """Close the client's connections; call it on the event loop that used them."""
        await self._client.close()
