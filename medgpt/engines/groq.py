"""The Groq cloud through the official ``groq`` client, so the gateway can serve from Groq and judges can
grade through it. Clinical text leaves the machine on this engine: it is used only when configured
(``engine: groq`` or a Groq judge).

The protocol is the chat-completions one of :class:`~medgpt.engines.openai_compat.OpenAIEngine` (the ``groq``
SDK has the same call and error classes); what differs: the client, usage arriving in the last event's
``x_groq.usage`` (Groq takes no ``stream_options``), no repeat penalty field (Groq rejects unknown ones), and
JSON mode names (``groq.json_mode``). The SDK's retries (``groq.max_retries``) honour ``Retry-After``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from medgpt.engines.base import GenerationRequest
from medgpt.engines.openai_compat import OpenAIEngine
from medgpt.settings import GroqSettings, ModelSpec


class GroqEngine(OpenAIEngine):
    name = "groq"

    def __init__(self, models: list[ModelSpec], settings: GroqSettings | None = None, timeout: float = 300.0):
        super().__init__(models, settings or GroqSettings(), timeout)  # type: ignore[arg-type]

    def _connect(self):
        import groq

        self._sdk = groq
        return groq.AsyncGroq(
            api_key=self.settings.api_key,
            base_url=self.settings.base_url,
            timeout=self.timeout,
            max_retries=self.settings.max_retries,
        )

    @property
    def _where(self) -> str:
        return self.settings.base_url or "Groq"

    def _options(self, request: GenerationRequest) -> dict[str, Any]:
        """The OpenAI engine's options without the two Groq rejects: ``stream_options`` and a repeat-penalty field."""
        kwargs = super()._options(replace(request, repeat_penalty=None))
        kwargs.pop("stream_options")
        return kwargs

    @staticmethod
    def _usage(event: Any) -> Any:
        extra = getattr(event, "x_groq", None)
        return getattr(extra, "usage", None) or getattr(event, "usage", None)
