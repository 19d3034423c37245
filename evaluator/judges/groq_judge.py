"""A judge through the official Groq client (``groq``), as in the seed (Mixtral on Groq).

The base URL is overridable so any OpenAI-compatible server can judge. Trap: the Groq client posts to
``<base_url>/openai/v1/chat/completions``, so a local server must serve under ``/openai`` (llama-cpp-python's
server: ``--root_path /openai``; llama.cpp's ``llama-server``: ``--api-prefix /openai``) and ``base_url`` is
given without it.

JSON mode is Groq's ``response_format={"type": "json_object"}`` (``json_mode="object"``).
``json_mode="schema"`` adds the verdict schema to it, the extension llama-cpp-python's server understands
(Groq's API does not: keep "object" there); ``"off"`` sends no response_format and relies on the lenient
parser. The client's own retries are switched off (``max_retries=0``) so that the evaluator's backoff, with
jitter and its count of retries, is the only one.
"""

from __future__ import annotations

import os

from evaluator.judges.base import is_loopback_url
from evaluator.retry import Retryable
from medgpt.prompts import Message

DEFAULT_GROQ_MODEL = "llama-3.3-70b-versatile"


def _retry_after(exc) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class GroqJudge:
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
    ):
        from groq import AsyncGroq

        key = api_key or os.environ.get(api_key_env)
        if not key:
            if base_url and is_loopback_url(base_url):
                key = "local"  # a loopback OpenAI-compatible server does not check it
            else:
                raise ValueError(f"the groq judge needs an API key: set {api_key_env}")
        self.model = model
        self.name = name or f"groq:{model}"
        self.external = not is_loopback_url(base_url)  # the default base URL is Groq's cloud
        self.max_tokens = max_tokens
        self.temperature = temperature
        if json_mode not in ("object", "schema", "off"):
            raise ValueError(f"json_mode must be object, schema or off, not {json_mode!r}")
        self.json_mode = json_mode
        self._client = AsyncGroq(api_key=key, base_url=base_url, max_retries=0, timeout=timeout)

    async def send(self, messages: list[Message]) -> str:
        import groq

        from evaluator.judges.rubrics import VERDICT_SCHEMA

        kwargs: dict = {}
        if self.json_mode == "object":
            kwargs["response_format"] = {"type": "json_object"}
        elif self.json_mode == "schema":
            kwargs["response_format"] = {"type": "json_object", "schema": VERDICT_SCHEMA}
        try:
            resp = await self._client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                **kwargs,
            )
        except groq.RateLimitError as exc:
            raise Retryable(f"429 from {self.name}", _retry_after(exc)) from exc
        except groq.APIStatusError as exc:
            if exc.status_code >= 500:
                raise Retryable(f"{exc.status_code} from {self.name}", _retry_after(exc)) from exc
            raise
        except (groq.APIConnectionError, groq.APITimeoutError) as exc:
            raise Retryable(f"{type(exc).__name__} from {self.name}") from exc
        return resp.choices[0].message.content or ""

    async def aclose(self) -> None:
        await self._client.close()
