"""Any OpenAI-compatible chat server (Groq, vLLM, llama.cpp's servers) through the official ``openai`` client.

Clinical text leaves the machine on this engine: it is used only when configured explicitly (``engine: openai``
with a base URL and key).

``GenerationRequest.repeat_penalty`` is multiplicative (llama.cpp's and Ollama's ``repeat_penalty``). The OpenAI
API has no such parameter, and its ``frequency_penalty`` is a different thing (a fixed amount subtracted per
earlier occurrence, range -2..2), so it is not mapped there. Servers that do take it get it in the body under the
name ``openai.repeat_penalty_field`` gives (``repeat_penalty`` for llama.cpp servers, ``repetition_penalty`` for
vLLM); unset (the default, right for OpenAI and Groq, which reject unknown fields), it is not sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from medgpt.engines.base import (
    Chunk,
    Engine,
    EngineError,
    EngineUnavailable,
    GenerationRequest,
    ModelInfo,
    ModelNotFound,
    PromptTooLong,
)
from medgpt.settings import ModelSpec, OpenAISettings


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(self, models: list[ModelSpec], settings: OpenAISettings | None = None, timeout: float = 300.0):
        import openai

        self.settings = settings or OpenAISettings()
        self.specs = {m.name: m for m in models}
        self._openai = openai
        self._client = openai.AsyncOpenAI(
            base_url=self.settings.base_url,
            api_key=self.settings.api_key or "not-needed",
            timeout=timeout,
            max_retries=2,
        )

    def _remote(self, model: str) -> str:
        spec = self.specs.get(model)
        return spec.remote or spec.name if spec else model

    def _translate(self, exc: Exception, model: str) -> EngineError:
        o = self._openai
        if isinstance(exc, o.NotFoundError):
            return ModelNotFound(f"model {model!r} not found on {self.settings.base_url}")
        if isinstance(exc, o.BadRequestError) and "context" in str(exc).lower():
            return PromptTooLong(str(exc))
        if isinstance(exc, (o.APIConnectionError, o.RateLimitError, o.InternalServerError, o.APITimeoutError)):
            return EngineUnavailable(f"{self.settings.base_url}: {exc}")
        return EngineError(f"{self.settings.base_url}: {exc}")

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        kwargs: dict[str, Any] = {}
        if request.json_schema is not None and self.settings.json_mode == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.json_schema},
            }
        elif request.json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": request.json_schema}
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if request.stop:
            kwargs["stop"] = list(request.stop)[:4]
        if request.repeat_penalty is not None and self.settings.repeat_penalty_field:
            kwargs["extra_body"] = {self.settings.repeat_penalty_field: request.repeat_penalty}
        try:
            stream = await self._client.chat.completions.create(
                model=self._remote(request.model),
                messages=request.messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                stream=True,
                stream_options={"include_usage": True},
                **kwargs,
            )
            finish, usage, deltas = None, None, 0
            # A caller that stops reading early (loop guard, client gone) closes this generator; leaving the
            # block closes the HTTP response at once, so the server sees the disconnect and stops generating.
            async with stream:
                async for event in stream:
                    if event.usage is not None:
                        usage = event.usage
                    for choice in event.choices:
                        if choice.delta and choice.delta.content:
                            deltas += 1
                            yield Chunk(text=choice.delta.content)
                        finish = choice.finish_reason or finish
        except EngineError:
            raise
        except Exception as exc:
            raise self._translate(exc, request.model) from exc
        yield Chunk(
            done=True,
            # Servers that ignore include_usage (llama-cpp-python's) send one token per delta: count those.
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else deltas,
            finish_reason=finish or "stop",
        )

    async def models(self) -> list[ModelInfo]:
        try:
            listed = await self._client.models.list()
        except Exception as exc:
            raise self._translate(exc, "") from exc
        remote = {m.id for m in listed.data}
        return [
            ModelInfo(
                name=spec.name,
                engine=self.name,
                quantization=spec.quantization,
                context_length=spec.n_ctx or self.settings.context_length,
                details={"description": spec.description, "remote": spec.remote or spec.name},
            )
            for spec in self.specs.values()
            if (spec.remote or spec.name) in remote
        ]

    async def context_length(self, model: str) -> int:
        spec = self.specs.get(model)
        return spec.n_ctx if spec else self.settings.context_length
