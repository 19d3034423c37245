"""Ollama server through the official ``ollama`` async client (what ``compose.yaml`` runs).

Ollama never refuses a prompt longer than its context: it drops the front and still answers 200, which for a
clinical note means losing the history without a word. So the prompt is counted here first, and one that leaves no
room for an answer in ``ModelSpec.n_ctx`` is refused (:class:`PromptTooLong`) before anything is sent; ``num_ctx``
is always sent as that same ``n_ctx``, and ``num_predict`` is cut to the room left, so Ollama never shifts the
context either. Ollama has no tokenize endpoint, so:

- a model whose GGUF is here (``ModelSpec.path``, which ``ollama_register`` uploads) is counted exactly, with
  llama.cpp's tokenizer of that GGUF loaded ``vocab_only`` (the same ids Ollama's runner computes);
- any other is counted as its UTF-8 bytes plus one (BOS): every token of a byte-level BPE or SentencePiece
  vocabulary with byte fallback spells at least one byte, so this never under-counts. It over-counts about
  fourfold, so such a model serves shorter prompts (and summaries split into more chunks); a bound that is never
  wrong beats an estimate that lets a note be truncated silently. (Refusing afterwards, when ``prompt_eval_count``
  shows a cut, would come after the answer had already been streamed.)

The whole generation, the stream's reads included, is bounded by ``GenerationRequest.timeout``
(:class:`GenerationTimeout`); closing the stream then tells Ollama to stop. Messages go through
:func:`medgpt.templates.neutralize_messages`: the chat template lives in the Ollama Modelfile, and Ollama parses
control tokens in the rendered prompt, so a note must not carry them.
"""

from __future__ import annotations

import asyncio
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
    PromptTooLong,
    before,
    deadline,
)
from medgpt.engines.gguf import GGUFVocabs
from medgpt.engines.remote import RemoteEngine
from medgpt.settings import ModelSpec, OllamaSettings
from medgpt.templates import ChatTemplate, neutralize_messages


class OllamaEngine(RemoteEngine):
    """JSON schemas go as Ollama's ``format``; Ollama has no GBNF grammars, and adapters are registered on the
    server (``ollama create``), not named per request."""

    name = "ollama"
    capabilities = Capabilities(json_schema=True)

    def __init__(self, models: list[ModelSpec], settings: OllamaSettings | None = None, timeout: float = 300.0):
        super().__init__(models, settings or OllamaSettings(), timeout)
        #: vocab-only llama.cpp tokenizers and chat templates of the GGUFs here, read on first use
        self._vocabs = GGUFVocabs()

    @staticmethod
    def _local(spec: ModelSpec) -> bool:
        return spec.path is not None and spec.path.exists()

    async def template(self, model: str) -> ChatTemplate:
        """The GGUF's template where the GGUF is here (what ``ollama_register`` registered it with), else the
        configured format's (the server renders its own; ours then only sizes the prompt)."""
        spec = self.spec(model)
        if not self._local(spec):
            return await super().template(model)
        return await asyncio.to_thread(self._vocabs.template, spec)

    def _count(self, model: str, text: str) -> int:
        spec = self.spec(model)
        if not self._local(spec):
            return len(text.encode("utf-8")) + 1
        return len(self._vocabs.tokenize(spec, text))

    async def count_tokens(self, model: str, text: str) -> int:
        """Exact with the model's GGUF here (llama.cpp's tokenizer, ``vocab_only``); else UTF-8 bytes + 1, an
        upper bound (see the module's doc)."""
        return await asyncio.to_thread(self._count, model, text)

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
        until = deadline(request)
        template = await before(until, self.template(request.model), request.timeout)
        messages = neutralize_messages(request.messages, template.markers)
        prompt_tokens = await before(
            until, self.count_tokens(request.model, template.render(messages)), request.timeout
        )
        room = spec.n_ctx - prompt_tokens
        if room < 1:
            raise PromptTooLong(
                f"prompt is {prompt_tokens} tokens; model {spec.name!r} holds {spec.n_ctx} (prompt + answer)"
            )
        options: dict[str, Any] = {
            "num_ctx": spec.n_ctx,
            "num_predict": min(request.max_tokens, room),
            "temperature": request.temperature,
        }
        if request.seed is not None:
            options["seed"] = request.seed
        if request.stop:
            options["stop"] = list(request.stop)
        if request.repeat_penalty is not None:
            options["repeat_penalty"] = request.repeat_penalty
        try:
            stream = await before(until, self._client.chat(
                model=self.remote_name(request.model),
                messages=messages,
                stream=True,
                format=request.json_schema,
                options=options,
                keep_alive=self.settings.keep_alive,
            ), request.timeout)  # fmt: skip
            # A caller that stops reading early (loop guard, client gone) closes this generator; aclosing then
            # closes the HTTP stream at once, so Ollama sees the disconnect and stops generating. So does the
            # deadline, which bounds each read (not the yields: the caller's time between reads counts, but the
            # caller's code is never what gets cancelled).
            async with aclosing(stream):
                while (part := await before(until, anext(stream, None), request.timeout)) is not None:
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
