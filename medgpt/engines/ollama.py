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
    Chunk,
    Engine,
    EngineError,
    EngineUnavailable,
    GenerationRequest,
    ModelInfo,
    ModelNotFound,
)
from medgpt.settings import ModelSpec, OllamaSettings


class OllamaEngine(Engine):
    name = "ollama"

    def __init__(self, models: list[ModelSpec], settings: OllamaSettings | None = None, timeout: float = 300.0):
        import ollama

        self.settings = settings or OllamaSettings()
        self.specs = {m.name: m for m in models}
        self._ollama = ollama
        self._client = ollama.AsyncClient(host=self.settings.host, timeout=timeout)

    def _remote(self, model: str) -> str:
        spec = self.specs.get(model)
        return spec.remote or spec.name if spec else model

    def _num_ctx(self, model: str) -> int:
        spec = self.specs.get(model)
        return spec.n_ctx if spec else 4096

    def _translate(self, exc: Exception, model: str) -> EngineError:
        if isinstance(exc, self._ollama.ResponseError):
            if exc.status_code == 404:
                return ModelNotFound(f"model {model!r} is not on the Ollama server: {exc.error}")
            if exc.status_code in (429, 500, 502, 503):
                return EngineUnavailable(f"Ollama answered {exc.status_code}: {exc.error}")
            return EngineError(f"Ollama answered {exc.status_code}: {exc.error}")
        if isinstance(exc, (httpx.HTTPError, ConnectionError, OSError)):
            return EngineUnavailable(f"cannot reach Ollama at {self.settings.host}: {exc}")
        return EngineError(f"Ollama failed: {exc}")

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        options: dict[str, Any] = {
            "num_ctx": self._num_ctx(request.model),
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
                model=self._remote(request.model),
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

    async def context_length(self, model: str) -> int:
        return self._num_ctx(model)
