"""A judge that is a core engine: the local llama.cpp engine (nothing leaves the machine) or an Ollama server.

JSON is enforced with the core's ``GenerationRequest.json_schema`` (a grammar in llama.cpp, ``format`` in
Ollama), so even a small local model returns a parseable verdict; whether the verdict is any good is another
matter, and the report says which judge graded.
"""

from __future__ import annotations

from evaluator.judges.base import is_loopback_url
from evaluator.judges.rubrics import VERDICT_SCHEMA
from evaluator.retry import Retryable
from medgpt.engines.base import Engine, EngineUnavailable, GenerationRequest, GenerationTimeout, complete
from medgpt.prompts import Message


class EngineJudge:
    def __init__(
        self,
        engine: Engine,
        model: str,
        *,
        name: str | None = None,
        external: bool = False,
        max_tokens: int = 160,
        seed: int | None = 0,
        timeout: float | None = 300.0,
        owns_engine: bool = False,
    ):
        self.engine = engine
        self.model = model
        self.name = name or f"{engine.name}:{model}"
        self.external = external
        self.max_tokens = max_tokens
        self.seed = seed
        self.timeout = timeout
        self.owns_engine = owns_engine

    async def send(self, messages: list[Message]) -> str:
        request = GenerationRequest(
            model=self.model,
            messages=messages,
            max_tokens=self.max_tokens,
            temperature=0.0,
            seed=self.seed,
            json_schema=VERDICT_SCHEMA,
            timeout=self.timeout,
        )
        try:
            return (await complete(self.engine, request)).text
        except (EngineUnavailable, GenerationTimeout) as exc:
            raise Retryable(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self.owns_engine:
            await self.engine.aclose()


def ollama_judge(
    model: str, host: str, *, name: str | None = None, max_tokens: int = 160, seed: int | None = 0
):
    """An Ollama-served judge; external unless the host is this machine."""
    from medgpt.engines.ollama import OllamaEngine
    from medgpt.settings import ModelSpec, OllamaSettings

    engine = OllamaEngine([ModelSpec(name=model, remote=model)], OllamaSettings(host=host))
    return EngineJudge(
        engine,
        model,
        name=name or f"ollama:{model}",
        external=not is_loopback_url(host),
        max_tokens=max_tokens,
        seed=seed,
        owns_engine=True,
    )
