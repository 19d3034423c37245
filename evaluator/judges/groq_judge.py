"""A judge on Groq (as in the seed: a large model on Groq's cloud): the judge rubric plus the core's ``groq``
engine (:class:`medgpt.engines.groq.GroqEngine`, the official ``groq`` client).

The base URL is overridable so any OpenAI-compatible server can judge. Trap: the Groq client posts to
``<base_url>/openai/v1/chat/completions``, so a local server must serve under ``/openai`` (llama-cpp-python's
server: ``--root_path /openai``; llama.cpp's ``llama-server``: ``--api-prefix /openai``) and ``base_url`` is
given without it.

``json_mode="object"`` is Groq's JSON mode (``response_format={"type": "json_object"}``), which every Groq
model takes; ``"schema"`` adds the verdict schema to it, the extension llama-cpp-python's server enforces
(Groq's API does not take it: keep "object" there); ``"off"`` sends no response_format and relies on the
lenient parser.

Retries are the engine's: the SDK retries 429, 5xx and connection errors itself, honouring ``Retry-After``. A
call that still fails is raised as it is (not as ``Retryable``), so the evaluator's loop does not retry the
retried call again; the judge records the item as unscored.
"""

from __future__ import annotations

import os

from evaluator.judges.base import is_loopback_url
from evaluator.judges.engine_judge import EngineJudge
from evaluator.judges.rubrics import VERDICT_SCHEMA
from medgpt.engines.base import GenerationRequest, complete
from medgpt.prompts import Message

DEFAULT_GROQ_MODEL = "llama-3.3-70b-versatile"

#: The judge's JSON modes as the engine's ``groq.json_mode`` ("off" sends no schema at all).
_ENGINE_JSON_MODE = {"object": "json_object_plain", "schema": "json_object", "off": "json_object_plain"}


class GroqJudge(EngineJudge):
    def __init__(
        self,
        model: str = DEFAULT_GROQ_MODEL,
        *,
        name: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "GROQ_API_KEY",
        max_tokens: int = 256,
        temperature: float = 0.0,
        timeout: float = 120.0,
        json_mode: str = "object",
        max_retries: int = 2,
    ):
        from medgpt.engines.groq import GroqEngine
        from medgpt.settings import GroqSettings, ModelSpec

        if json_mode not in _ENGINE_JSON_MODE:
            raise ValueError(f"json_mode must be object, schema or off, not {json_mode!r}")
        key = api_key or os.environ.get(api_key_env)
        if not key:
            if base_url and is_loopback_url(base_url):
                key = "local"  # a loopback OpenAI-compatible server does not check it
            else:
                raise ValueError(f"the groq judge needs an API key: set {api_key_env}")
        settings = GroqSettings(
            base_url=base_url, api_key=key, json_mode=_ENGINE_JSON_MODE[json_mode], max_retries=max_retries
        )
        engine = GroqEngine([ModelSpec(name=model, remote=model)], settings, timeout=timeout)
        super().__init__(
            engine,
            model,
            name=name or f"groq:{model}",
            external=not is_loopback_url(base_url),  # the default base URL is Groq's cloud
            max_tokens=max_tokens,
            seed=None,
            timeout=None,  # the client's own timeout bounds each call
            owns_engine=True,
        )
        self.temperature = temperature
        self.json_mode = json_mode

    async def send(self, messages: list[Message]) -> str:
        request = GenerationRequest(
            model=self.model,
            messages=messages,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            json_schema=None if self.json_mode == "off" else VERDICT_SCHEMA,
        )
        return (await complete(self.engine, request)).text
