"""Ollama server through the official ``ollama`` async client (what ``compose.yaml`` runs).

``num_ctx`` is always sent: without it Ollama uses its own default and silently truncates long prompts from the
front, which for a clinical note means losing the history without a word. The chat template lives in the Ollama
Modelfile (written by ``finetune``), so messages go as they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx

from medgpt.engines.base import (
    Capabilities,
    Chunk,
    EngineError,
    EngineUnavailable,
    GenerationRequest,
    ModelInfo,
    ModelNotFound,
)
from medgpt.engines.remote import RemoteEngine
from medgpt.settings import ModelSpec, OllamaSettings


class OllamaEngine(RemoteEngine):
    """JSON schemas go as Ollama's ``format``; Ollama has no GBNF grammars, and adapters are registered on the
    server (``ollama create``), not named per request."""

    name = "ollama"
    capabilities = Capabilities(json_schema=True)

    def __init__(self, models: list[ModelSpec], settings: OllamaSettings | None = None, timeout: float = 300.0):
        super().__init__(models, settings or OllamaSettings(), timeout)

    def _connect(self):
        import ollama

        self._ollama = ollama
        return ollama.AsyncClient(host=self.settings.host, timeout=self.timeout)

    def _translate(self, exc: Exception, model: str) -> EngineError:
        if isinstance(exc, self._ollama.ResponseError):
            if exc.status_code == 404:
                return ModelNotFound(f"model {model!r} is not on the Ollama server: {exc.error}")
            if exc.status_code in (429, 500, 502, 503):
                # the client drops the response headers, so no Retry-After to pass on
                return EngineUnavailable(f"Ollama answered {exc.status_code}: {exc.error}")
            return EngineError(f"Ollama answered {exc.status_code}: {exc.error}")
        if isinstance(exc, (httpx.HTTPError, ConnectionError, OSError)):
            return EngineUnavailable(f"cannot reach Ollama at {self.settings.host}: {exc}")
        return EngineError(f"Ollama failed: {exc}")

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        spec = self.check(request)
        options: dict[str, Any] = {
            "num_ctx": spec.n_ctx,
            "num_predict": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.seed is not None:
            options["seed"] = request.seed
        if request.stop:
            options["stop"] = list(request.stop)
        if request.repeat_penalty is not None:
            options["repeat_penalty"] = request.repeat_penalty
        try:
            stream = await self._client.chat(
                model=self.remote_name(request.model),
                messages=request.messages,
                stream=True,
                format=request.json_schema,
                options=options,
                keep_alive=self.settings.keep_alive,
            )
            # A caller that stops reading early (loop guard, client gone) closes this generator; aclosing then
            # closes the HTTP stream at once, so Ollama sees the disconnect and stops generating.
            async with aclosing(stream):
                async for part in stream:
                    text = part.message.content or "" if part.message else ""
                    if part.done:
                        if text:
                            yield Chunk(text=text)
                        yield Chunk(
                            done=True,
                            prompt_tokens=part.prompt_eval_count or 0,
                            completion_tokens=part.eval_count or 0,
                            finish_reason=part.done_reason or "stop",
                        )
                        return
                    if text:
                        yield Chunk(text=text)
        except EngineError:
            raise
        except Exception as exc:  # the client raises several types; callers get one family
            raise self._translate(exc, request.model) from exc

    async def models(self) -> list[ModelInfo]:
        try:
            listed = await self._client.list()
        except Exception as exc:
            raise self._translate(exc, "") from exc
        remote = {m.model: m for m in listed.models}
        out = []
        for spec in self.specs.values():
            tag = spec.remote or spec.name
            hit = remote.get(tag) or remote.get(f"{tag}:latest")
            if hit is None:
                continue
            details = hit.details
            out.append(
                ModelInfo(
                    name=spec.name,
                    engine=self.name,
                    quantization=(details.quantization_level if details else None) or spec.quantization,
                    size_bytes=hit.size,
                    loaded=False,
                    context_length=spec.n_ctx,
                    details={"description": spec.description, "ollama_model": hit.model},
                )
            )
        return out
