"""The one small interface every engine implements, and the one error family they raise.

An engine turns a :class:`GenerationRequest` (messages + sampling + an optional output constraint) into a stream of
:class:`Chunk` s. Everything else (MCQ parsing, chunked summaries) is built on top in :mod:`medgpt.tasks`, so a new
backend only has to implement :meth:`Engine.generate` and :meth:`Engine.models`.

What an engine can do is declared, not probed: :attr:`Engine.capabilities` says whether it decodes under a
GBNF grammar or a JSON schema, serves LoRA adapters and counts tokens with the model's own tokenizer, and
tasks pick their strategy from it. A request an engine cannot honour (a grammar on an engine without
grammars) is refused with :class:`Unsupported`, never silently dropped.

The errors are the core's own; which HTTP status each becomes is the gateway's business (``api/errors.py``).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from medgpt.settings import ModelSpec
from medgpt.templates import ChatTemplate, Message, TemplateError, named


class EngineError(Exception):
    """Base of every engine failure: the model or its server failed or answered something unusable."""


class EngineUnavailable(EngineError):
    """The engine (server, library, weights) cannot be reached now; retrying later may work.

    ``retry_after``: the wait in seconds the server asked for (a 429's or 503's ``Retry-After``), if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(EngineUnavailable):
    """The bounded queue in front of the engine is full, or the request's wait would outlast its deadline: refused
    at once with a wait to retry after, instead of queuing a request that would only time out."""


class ModelNotFound(EngineError):
    """The model is not one this engine was configured with, or its weights or server copy are missing."""


class UnusableTemplate(ModelNotFound):
    """The model's weights are here but no chat template can be used for them: its GGUF's own template cannot
    render MedGPT's conversations, or it has none and no ``prompt_format`` is configured. Refused like missing
    weights (retrying will not help); found when the model is first used, never halfway through a request."""


class PromptTooLong(EngineError):
    """The prompt does not fit the model's context window even after what the task could do about it."""


class WorkOverBudget(PromptTooLong):
    """The request would make the model generate more tokens in all (chunks x max_tokens of a long summary, plus
    its merges) than the configured budget: refused before any work starts."""


class GenerationTimeout(EngineError):
    """The generation ran past the request's ``timeout``; the engine has stopped it."""


class InvalidOutput(EngineError):
    """The model's output could not be parsed into the required shape, even after the rescue step."""


class Unsupported(EngineError):
    """The request asks for something this engine does not declare in its :class:`Capabilities` (a grammar on
    a remote server): refused, so a constraint is never silently dropped."""


@dataclass(frozen=True)
class Capabilities:
    """What an engine does beyond streaming text, so tasks choose a strategy without probing for methods.

    - ``grammar``: decodes under a GBNF grammar (``GenerationRequest.grammar``).
    - ``json_schema``: decodes under a JSON schema (``GenerationRequest.json_schema``), natively or through
      the server's JSON mode.
    - ``adapters``: serves LoRA adapters named in ``ModelSpec.adapter`` (else the adapter must be merged or
      registered on the server).
    - ``token_count``: :meth:`Engine.count_tokens` uses the model's own tokenizer; without it the count is an
      over-estimate (one token per 3 characters), safe for budgeting, not for figures.
    """

    grammar: bool = False
    json_schema: bool = False
    adapters: bool = False
    token_count: bool = False


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
    #: GBNF grammar; only engines whose ``capabilities.grammar`` is set take it, the others raise Unsupported.
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
    """A text-generation backend over the models it was configured with (``specs``, by name). Implementations
    must be safe to call from concurrent asyncio tasks, and must refuse a model name they were not configured
    with (:class:`ModelNotFound`) rather than pass it on to a server that might serve something else."""

    name: str = "engine"
    capabilities: Capabilities = Capabilities()
    #: Requests the engine decodes at once: what the gateway admits together unless configured otherwise
    #: (``admission.max_concurrent``).
    concurrency: int = 1

    def __init__(self, models: list[ModelSpec]) -> None:
        self.specs: dict[str, ModelSpec] = {m.name: m for m in models}

    def spec(self, model: str) -> ModelSpec:
        """The configured model ``model``; :class:`ModelNotFound` for any other name, which the error does not quote
        (it is the client's text: it reaches error bodies and logs)."""
        spec = self.specs.get(model)
        if spec is None:
            raise ModelNotFound(f"unknown model; available: {sorted(self.available())}")
        return spec

    def available(self) -> list[str]:
        """The configured models this engine can serve without asking a server: those whose local files exist
        for the embedded engine, every configured one for a remote engine (the server's: :meth:`models`)."""
        return list(self.specs)

    async def template(self, model: str) -> ChatTemplate:
        """The chat template the model's prompts are rendered (and counted) in. Engines that read the model's GGUF
        take its own template (or the configured named format). Here, for a remote server that applies the model's
        template itself: the configured named format, else one named ``server`` (Gemma's turns) that only sizes
        prompts for counting."""
        fmt = self.spec(model).prompt_format
        if fmt in ("auto", "gguf"):
            return replace(named("gemma"), name="server")
        try:
            return named(fmt)
        except TemplateError as exc:
            raise UnusableTemplate(f"model {model!r}: {exc}") from None

    def check(self, request: GenerationRequest) -> ModelSpec:
        """The request's model spec, once the request is one this engine can honour: a known model and only
        the output constraints its :attr:`capabilities` declare."""
        spec = self.spec(request.model)
        if request.grammar is not None and not self.capabilities.grammar:
            raise Unsupported(f"the {self.name} engine cannot decode under a grammar")
        if request.json_schema is not None and not self.capabilities.json_schema:
            raise Unsupported(f"the {self.name} engine cannot decode under a JSON schema")
        return spec

    @abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Stream the completion of ``request``; raise :class:`EngineError` subclasses, nothing else."""

    @abstractmethod
    async def models(self) -> list[ModelInfo]:
        """The models this engine can serve now."""

    async def context_length(self, model: str) -> int:
        """Tokens the model's context holds (prompt + completion)."""
        return self.spec(model).n_ctx

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


T = TypeVar("T")


def deadline(request: GenerationRequest) -> float | None:
    """The event-loop time by which ``request`` must be done (None: no timeout)."""
    return None if request.timeout is None else asyncio.get_running_loop().time() + request.timeout


async def before(deadline: float | None, awaitable: Awaitable[T], seconds: float | None = None) -> T:
    """``await awaitable``, cancelled at ``deadline`` (loop time) with :class:`GenerationTimeout` (its message
    names ``seconds``, the request's timeout). A streaming engine awaits each read of its server's stream through
    it, never its own ``yield``, so only the engine's wait is cancelled, not the caller's code."""
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
