"""Embedded llama.cpp: loads GGUF files in-process with llama-cpp-python. The default engine without Docker.

Why it looks like this:
- A ``Llama`` object is not thread-safe (two threads crash it, then it hangs), and on 2 cores two generations at
  once are slower than one after the other anyway. So one lock serializes all model work, and waiting costs nothing
  but a parked thread.
- Generation is blocking C code. Each request runs it in its own thread and hands tokens to the event loop through
  a queue, so the server keeps answering (health, other routes) while a model writes.
- A request that is abandoned (timeout, client gone, or the caller closing the stream early, as the loop guard in
  :mod:`medgpt.tasks` does) sets a flag the generating thread checks after every token, so the lock is released
  within one token instead of after ``max_tokens``.
- Prompts are rendered by MedGPT in the model's chat template (:mod:`medgpt.engines.gguf`: the GGUF's own Jinja
  template, or a named format for a GGUF without one, such as Gemma 3 270M), never by llama-cpp-python's chat
  handlers (which fall back to the llama-2 format for a GGUF without a template and produce junk).
- Only the template's own markers are tokenized as special tokens (:func:`tokenize_prompt`); every other byte, the
  user's text included, is tokenized as plain text, so a note cannot forge a turn or slip in any other control
  token (``<bos>``, ``<unused0>``).
- A model's GGUF and adapter are checked against their SHA-256 pins before llama.cpp loads them
  (:func:`~medgpt.engines.gguf.verify_pins`).
- A grammar is compiled before generation: llama.cpp answers an unparsable grammar by adding a NULL sampler and
  crashing the process, so it is refused here as an :class:`EngineError` instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from medgpt import schema_limits
from medgpt.engines.base import (
    Capabilities,
    Chunk,
    Engine,
    EngineError,
    EngineUnavailable,
    GenerationRequest,
    GenerationTimeout,
    ModelInfo,
    PromptTooLong,
)
from medgpt.engines.gguf import (
    grammar_compiles,
    local_weights,
    model_template,
    tokenize_prompt,
    verify_pins,
    weights_present,
)
from medgpt.models import FileDigests
from medgpt.settings import LlamaCppSettings, ModelSpec
from medgpt.templates import ChatTemplate

log = logging.getLogger(__name__)
_DONE = object()


class LlamaCppEngine(Engine):
    """Everything in-process: grammars and JSON schemas become llama.cpp grammars, adapters load with the
    model, and tokens are counted with the model's own tokenizer."""

    name = "llamacpp"
    capabilities = Capabilities(grammar=True, json_schema=True, adapters=True, token_count=True)

    def __init__(self, models: list[ModelSpec], settings: LlamaCppSettings | None = None):
        # Idle OpenMP threads spin by default and steal the core the other thread needs; measured on 2 cores,
        # PASSIVE keeps decode speed under contention and costs little when idle. Must be set before the library
        # starts its thread pool, i.e. before the first model loads.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        super().__init__(models)
        self.settings = settings or LlamaCppSettings()
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        #: SHA-256 of the weight files, once per file version: checked against the pins before every load.
        self._digests = FileDigests()
        #: each model's chat template, read once from its loaded GGUF's metadata
        self._templates: dict[str, ChatTemplate] = {}

    # --- models --------------------------------------------------------------------------------------------------

    def _spec(self, name: str) -> ModelSpec:
        """The configured model, once its weights are known to be here."""
        return local_weights(self.spec(name))

    def available(self) -> list[str]:
        """Configured models whose GGUF (and adapter) exist here."""
        return [n for n, s in self.specs.items() if weights_present(s)]

    def _load(self, name: str) -> Any:
        """Return the loaded model, loading it (and evicting the least recently used) if needed. Hold the lock."""
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return self._loaded[name]
        spec = self._spec(name)
        verify_pins(self._digests, spec)
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise EngineUnavailable("llama-cpp-python is not installed: pip install 'medgpt[llamacpp]'") from exc
        while len(self._loaded) >= max(1, self.settings.max_loaded):
            # Dropped, not closed: a tokenizing thread may still hold it; it is freed with its last reference.
            self._loaded.popitem(last=False)
        started = time.perf_counter()
        try:
            llm = Llama(
                model_path=str(spec.path),
                lora_path=str(spec.adapter) if spec.adapter else None,
                lora_scale=spec.adapter_scale,
                n_ctx=spec.n_ctx,
                n_threads=self.settings.n_threads,
                n_threads_batch=self.settings.n_threads,
                n_batch=self.settings.n_batch,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise EngineUnavailable(f"could not load model {name!r}: {exc}") from exc
        log.info("loaded model %s in %.2f s", name, time.perf_counter() - started)
        self._loaded[name] = llm
        return llm

    async def models(self) -> list[ModelInfo]:
        out = []
        for name in self.available():
            spec = self.specs[name]
            size = spec.path.stat().st_size + (spec.adapter.stat().st_size if spec.adapter else 0)
            out.append(
                ModelInfo(
                    name=name,
                    engine=self.name,
                    quantization=spec.quantization,
                    size_bytes=size,
                    loaded=name in self._loaded,
                    context_length=spec.n_ctx,
                    details={"description": spec.description, "adapter": bool(spec.adapter)},
                )
            )
        return out

    async def context_length(self, model: str) -> int:
        return self._spec(model).n_ctx

    async def template(self, model: str) -> ChatTemplate:
        spec = self._spec(model)
        return self._templates.get(model) or await asyncio.to_thread(self._template, spec)

    def _template(self, spec: ModelSpec) -> ChatTemplate:
        """Read once from the loaded model's own metadata (no second copy of the vocabulary), under the lock
        that every use of a loaded model takes."""
        with self._lock:
            if spec.name not in self._templates:
                self._templates[spec.name] = model_template(spec, self._load(spec.name))
            return self._templates[spec.name]

    async def count_tokens(self, model: str, text: str) -> int:
        return len(await asyncio.to_thread(self._tokenize, model, text))

    def _tokenize(self, model: str, text: str) -> list[int]:
        """Tokens of ``text`` as :func:`tokenize_prompt` counts them: the template's markers as one token each,
        everything else as plain text (a rendered prompt's contents are already neutralized)."""
        template = self._templates.get(model) or self._template(self._spec(model))
        # Tokenizing reads the vocabulary only: it need not wait behind a running generation, only for a load.
        llm = self._loaded.get(model)
        if llm is None:
            with self._lock:
                llm = self._load(model)
        return tokenize_prompt(llm, text, template)

    # --- generation ----------------------------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        self.check(request)
        spec = self._spec(request.model)
        template = await self.template(request.model)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the caller's event loop is gone (abandoned request): nobody to tell
                cancel.set()

        def work() -> None:
            try:
                with self._lock:
                    if cancel.is_set():
                        return
                    self._generate_locked(spec, template, request, cancel, emit)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, never lost in the thread
                emit(exc)
            finally:
                emit(_DONE)

        deadline = None if request.timeout is None else time.monotonic() + request.timeout
        threading.Thread(target=work, name=f"llamacpp-{request.model}", daemon=True).start()
        try:
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise GenerationTimeout(f"generation exceeded {request.timeout:.0f} s")
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    raise GenerationTimeout(f"generation exceeded {request.timeout:.0f} s") from None
                if item is _DONE:
                    return
                if isinstance(item, EngineError):
                    raise item
                if isinstance(item, BaseException):
                    raise EngineError(f"llama.cpp failed: {item}") from item
                yield item
        finally:
            cancel.set()  # client gone, timeout or finished: the thread stops at the next token

    def _generate_locked(
        self, spec: ModelSpec, template: ChatTemplate, request: GenerationRequest, cancel: threading.Event, emit
    ) -> None:
        llm = self._load(spec.name)
        tokens = tokenize_prompt(llm, template.render(request.messages), template)
        room = spec.n_ctx - len(tokens)
        if room < 1:
            raise PromptTooLong(
                f"prompt is {len(tokens)} tokens; model {spec.name!r} holds {spec.n_ctx} (prompt + answer)"
            )
        max_tokens = min(request.max_tokens, room)
        finish_reason = None
        sampling: dict[str, Any] = {}
        if request.repeat_penalty is not None:  # else llama-cpp-python's default (1.0: no penalty)
            sampling["repeat_penalty"] = request.repeat_penalty
        for part in llm.create_completion(
            tokens,
            max_tokens=max_tokens,
            temperature=request.temperature,
            seed=request.seed,
            stop=list(request.stop or template.stop),
            grammar=self._grammar(request, llm),
            stream=True,
            **sampling,
        ):
            choice = part["choices"][0]
            if choice["text"]:
                emit(Chunk(text=choice["text"]))
            finish_reason = choice.get("finish_reason") or finish_reason
            if cancel.is_set():
                finish_reason = "cancelled"
                break
        # Stream chunks are not tokens (stop-string matching holds text back); the context is. The last sampled
        # token is never evaluated, hence + 1.
        completion_tokens = max(0, llm.n_tokens - len(tokens) + 1)
        emit(
            Chunk(
                done=True,
                prompt_tokens=len(tokens),
                completion_tokens=completion_tokens,
                finish_reason=finish_reason or "length",
            )
        )

    @staticmethod
    def _grammar(request: GenerationRequest, llm: Any) -> Any:
        """The request's grammar or JSON schema as a llama.cpp grammar, compiled once here against the model's
        vocabulary: ``LlamaGrammar`` only stores the text, and an unparsable one would crash the generation."""
        if request.json_schema is None and request.grammar is None:
            return None
        from llama_cpp import LlamaGrammar

        try:
            if request.json_schema is not None:  # bounded like a client's (the gateway sends clients' as GBNF)
                grammar = LlamaGrammar.from_string(schema_limits.to_grammar(request.json_schema), verbose=False)
            else:
                grammar = LlamaGrammar.from_string(request.grammar, verbose=False)
        # Not only ValueError: the JSON-schema converter fails on malformed schemas with AssertionError, TypeError
        # or AttributeError too ({"type": 5}, {"properties": 3}), and a client's schema must not become a 500.
        except Exception as exc:
            raise EngineError(f"invalid output constraint: {exc}") from exc
        if not grammar_compiles(llm, grammar._grammar):
            raise EngineError("invalid output constraint: llama.cpp could not parse the grammar")
        return grammar

    async def aclose(self) -> None:
        with self._lock:
            while self._loaded:
                _, llm = self._loaded.popitem()
                llm.close()
