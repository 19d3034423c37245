"""The one small interface every engine implements, and the one error family they raise.

An engine turns a :class:`GenerationRequest` (messages + sampling + an optional output constraint) into a stream of
:class:`Chunk` s. Everything else (MCQ parsing, chunked summaries) is built on top in :mod:`medgpt.tasks`, so a new
backend only has to implement :meth:`Engine.generate` and :meth:`Engine.models`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from medgpt.prompts import Message


class EngineError(Exception):
    """Base of every engine failure; ``status`` is the HTTP status the gateway answers with."""

    status = 502


class EngineUnavailable(EngineError):
    """The engine (server, library, weights) cannot be reached now; retrying later may work."""

    status = 503


class ModelNotFound(EngineError):
    status = 404


class PromptTooLong(EngineError):
    """The prompt does not fit the model's context window even after what the task could do about it."""

    status = 413


class GenerationTimeout(EngineError):
    status = 504


class InvalidOutput(EngineError):
    """The model's output could not be parsed into the required shape, even after the rescue step."""

    status = 502


@dataclass(frozen=True)
class GenerationRequest:
    model: str
    messages: list[Message]
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    #: JSON schema the output must satisfy; every engine honours it (llama.cpp grammar, Ollama ``format``,
    #: OpenAI ``response_format``).
    json_schema: dict[str, Any] | None = None
    #: GBNF grammar; honoured by the embedded llama.cpp engine only, ignored (and validated after) elsewhere.
    grammar: str | None = None
    #: Seconds after which generation is abandoned with :class:`GenerationTimeout`.
    timeout: float | None = None
    #: Multiplicative penalty on tokens the model has just written (1.0 = none, >1 discourages repeating them);
    #: None leaves the engine's own default. llama.cpp and Ollama take it as ``repeat_penalty``; OpenAI-compatible
    #: servers only when configured (the OpenAI API itself has no such parameter).
    repeat_penalty: float | None = None


@dataclass
class Chunk:
    """A piece of generated text; the last chunk of a stream has ``done=True`` and carries the usage."""

    text: str = ""
    done: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None  # "stop" | "length" (tasks add "repetition" when their loop guard cuts)


@dataclass
class Completion:
    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class ModelInfo:
    name: str
    engine: str
    quantization: str | None = None
    size_bytes: int | None = None
    loaded: bool = False
    context_length: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Engine(ABC):
    """A text-generation backend. Implementations must be safe to call from concurrent asyncio tasks."""

    name: str = "engine"

    @abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Stream the completion of ``request``; raise :class:`EngineError` subclasses, nothing else."""

    @abstractmethod
    async def models(self) -> list[ModelInfo]:
        """The models this engine can serve now."""

    async def context_length(self, model: str) -> int:
        """Tokens the model's context holds (prompt + completion)."""
        return 2048

    async def count_tokens(self, model: str, text: str) -> int:
        """Tokens ``text`` takes; engines without a tokenizer API over-estimate (one token per 3 characters)."""
        return len(text) // 3 + 1

    async def ready(self, model: str) -> bool:
        """Whether ``model`` answers now (used by ``/ready``): a one-token generation by default."""
        req = GenerationRequest(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
        async for _ in self.generate(req):
            pass
        return True

    async def aclose(self) -> None:
        """Release clients, threads and weights."""


async def complete(engine: Engine, request: GenerationRequest) -> Completion:
    """Collect a stream into one :class:`Completion`."""
    import time

    started = time.perf_counter()
    parts: list[str] = []
    last = Chunk()
    async for chunk in engine.generate(request):
        parts.append(chunk.text)
        if chunk.done:
            last = chunk
    return Completion(
        text="".join(parts),
        model=request.model,
        prompt_tokens=last.prompt_tokens,
        completion_tokens=last.completion_tokens,
        finish_reason=last.finish_reason,
        seconds=time.perf_counter() - started,
    )
