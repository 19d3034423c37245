"""Engines behind one interface (:class:`~medgpt.engines.base.Engine`); :func:`create_engine` picks one by name.

Client libraries are imported only by the engine that needs them, so a llama.cpp-only install has no Ollama or
OpenAI or Groq client, and the reverse.
"""

from __future__ import annotations

from medgpt.engines.base import (
    Capabilities,
    Chunk,
    Completion,
    Engine,
    EngineError,
    EngineUnavailable,
    GenerationRequest,
    GenerationTimeout,
    InvalidOutput,
    ModelInfo,
    ModelNotFound,
    Overloaded,
    PromptTooLong,
    Unsupported,
    UnusableTemplate,
    WorkOverBudget,
    complete,
)
from medgpt.settings import Settings

__all__ = [
    "Capabilities",
    "Chunk",
    "Completion",
    "Engine",
    "EngineError",
    "EngineUnavailable",
    "GenerationRequest",
    "GenerationTimeout",
    "InvalidOutput",
    "ModelInfo",
    "ModelNotFound",
    "Overloaded",
    "PromptTooLong",
    "Unsupported",
    "UnusableTemplate",
    "WorkOverBudget",
    "complete",
    "create_engine",
]


def create_engine(settings: Settings, kind: str | None = None) -> Engine:
    """Build the engine ``kind`` (default ``settings.engine``) over the configured models."""
    kind = kind or settings.engine
    if kind == "llamacpp":
        from medgpt.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(settings.models, settings.llamacpp)
    if kind == "llamaserver":
        from medgpt.engines.llamaserver import LlamaServerEngine

        return LlamaServerEngine(settings.models, settings.llamaserver)
    if kind == "ollama":
        from medgpt.engines.ollama import OllamaEngine

        return OllamaEngine(settings.models, settings.ollama, timeout=settings.limits.generation_timeout)
    if kind == "openai":
        from medgpt.engines.openai_compat import OpenAIEngine

        return OpenAIEngine(settings.models, settings.openai, timeout=settings.limits.generation_timeout)
    if kind == "groq":
        from medgpt.engines.groq import GroqEngine

        return GroqEngine(settings.models, settings.groq, timeout=settings.limits.generation_timeout)
    raise ValueError(f"unknown engine {kind!r}: choose llamacpp, llamaserver, ollama, openai or groq")
