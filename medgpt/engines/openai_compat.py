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
    Capabilities,
    Chunk,
    EngineError,
    EngineUnavailable,
    GenerationRequest,
    ModelInfo,
    ModelNotFound,
    PromptTooLong,
    before,
    deadline,
)
from medgpt.engines.remote import RemoteEngine
from medgpt.settings import ModelSpec, OpenAISettings
from medgpt.templates import neutralize_messages


def retry_after(exc: Exception) -> float | None:
    """The ``Retry-After`` seconds of an SDK status error's response, when the server sent a number."""
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def response_format(json_mode: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The ``response_format`` asking for output under ``schema``: ``json_schema`` is the OpenAI API's (Groq's
    too, on the models that take it); ``json_object`` carries the schema in the ``schema`` extension
    llama-cpp-python's server enforces; ``json_object_plain`` asks for any JSON object (Groq's JSON mode on
    every model; the schema is then only in the prompt)."""
    if json_mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    if json_mode == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_object"}


class OpenAIEngine(RemoteEngine):
    """The chat-completions protocol, shared by :class:`~medgpt.engines.groq.GroqEngine`: both SDKs are
    generated from the same API shape (same call, same error classes); the subclass changes the client, how
    usage arrives and which options it sends."""

    name = "openai"
    capabilities = Capabilities(json_schema=True)

    def __init__(self, models: list[ModelSpec], settings: OpenAISettings | None = None, timeout: float = 300.0):
        super().__init__(models, settings or OpenAISettings(), timeout)

    def _connect(self):
        import openai

        self._sdk = openai
        return openai.AsyncOpenAI(
            base_url=self.settings.base_url,
            api_key=self.settings.api_key or "not-needed",
            timeout=self.timeout,
            max_retries=self.settings.max_retries,
        )

    @property
    def _where(self) -> str:
        return self.settings.base_url

    def _translate(self, exc: Exception, model: str) -> EngineError:
        o = self._sdk
        if isinstance(exc, o.NotFoundError):
            return ModelNotFound(f"model {model!r} not found on {self._where}")
        if isinstance(exc, o.BadRequestError) and "context" in str(exc).lower():
            return PromptTooLong(str(exc))
        if isinstance(exc, (o.RateLimitError, o.InternalServerError)):
            return EngineUnavailable(f"{self._where}: {exc}", retry_after(exc))
        if isinstance(exc, (o.APIConnectionError, o.APITimeoutError)):
            return EngineUnavailable(f"{self._where}: {exc}")
        return EngineError(f"{self._where}: {exc}")

    def _options(self, request: GenerationRequest) -> dict[str, Any]:
        """Everything the create call takes besides model, messages, max_tokens and temperature."""
        kwargs: dict[str, Any] = {"stream_options": {"include_usage": True}}
        if request.json_schema is not None:
            kwargs["response_format"] = response_format(self.settings.json_mode, request.json_schema)
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if request.stop:
            kwargs["stop"] = list(request.stop)[:4]
        if request.repeat_penalty is not None and self.settings.repeat_penalty_field:
            kwargs["extra_body"] = {self.settings.repeat_penalty_field: request.repeat_penalty}
        return kwargs

    @staticmethod
    def _usage(event: Any) -> Any:
        """The usage an event carries (the last one, with ``include_usage``), else None."""
        return event.usage

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        self.check(request)
        # The client's timeout bounds each read, not the generation: the request's deadline bounds the call and
        # every read of the stream (never the yields, so the caller's own code is not what gets cancelled).
        until = deadline(request)
        try:
            stream = await before(until, self._client.chat.completions.create(
                model=self.remote_name(request.model),
                messages=neutralize_messages(request.messages),  # control tokens in a note stay text
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                stream=True,
                **self._options(request),
            ), request.timeout)  # fmt: skip
            finish, usage, deltas = None, None, 0
            # A caller that stops reading early (loop guard, client gone) closes this generator, and the deadline
            # raises GenerationTimeout in it; either way leaving the block closes the HTTP response at once, so the
            # server sees the disconnect and stops generating.
            async with stream:
                events = aiter(stream)
                while (event := await before(until, anext(events, None), request.timeout)) is not None:
                    usage = self._usage(event) or usage
                    for choice in event.choices:
                        if choice.delta and choice.delta.content:
                            deltas += 1
                            yield Chunk(text=choice.delta.content)
                        finish = choice.finish_reason or finish
        except EngineError:
            raise
        except Exception as exc:
            raise self._translate(exc, request.model) from exc
        if usage is not None:
            prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
        else:
            # Servers that ignore include_usage (llama-cpp-python's) send one token per delta: count those,
            # and the prompt as the base engine estimates it (an over-estimate), never as 0.
            prompt = (await self.template(request.model)).render(request.messages)
            prompt_tokens, completion_tokens = await self.count_tokens(request.model, prompt), deltas
        yield Chunk(
            done=True,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
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
                context_length=spec.n_ctx,
                details={"description": spec.description, "remote": spec.remote or spec.name},
            )
            for spec in self.specs.values()
            if (spec.remote or spec.name) in remote
        ]
