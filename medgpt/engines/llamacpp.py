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
- Gemma 3 270M ships no chat template: prompts are rendered by :func:`medgpt.prompts.render`, never by llama.cpp.
- Only the template's own turn markers are tokenized as special tokens (:func:`tokenize_prompt`); every other
  byte, the user's text included, is tokenized as plain text, so a note cannot forge a turn or slip in any other
  control token (``<bos>``, ``<unused0>``).
- A model's GGUF and adapter are checked against their SHA-256 pins (``ModelSpec.sha256``/``adapter_sha256``)
  before llama.cpp loads them: a mismatch is :class:`ModelNotFound` (the pinned weights are not here, exactly as
  when the file is missing; retrying will not help, so not the 503 of :class:`EngineUnavailable`).
- A grammar is compiled before generation: llama.cpp answers an unparsable grammar by adding a NULL sampler and
  crashing the process, so it is refused here as an :class:`EngineError` instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from medgpt.engines.base import (
    Capabilities,
    Chunk,
    Engine,
    EngineError,
    EngineUnavailable,
    GenerationRequest,
    GenerationTimeout,
    ModelInfo,
    ModelNotFound,
    PromptTooLong,
)
from medgpt.models import FileDigests, PinMismatch
from medgpt.prompts import STOP, TEMPLATE_TOKENS, PromptFormat, render
from medgpt.settings import LlamaCppSettings, ModelSpec

log = logging.getLogger(__name__)
_DONE = object()


def tokenize_prompt(llm: Any, prompt: str, fmt: PromptFormat) -> list[int]:
    """Token ids of ``prompt`` (BOS first) with only the format's template markers (``TEMPLATE_TOKENS[fmt]``,
    e.g. ``<start_of_turn>``) read as special tokens and every other byte as plain text.

    llama.cpp with ``special=True`` splits the text around special tokens and tokenizes each piece on its own, so
    for a prompt whose only control strings are the template's this gives the same ids as tokenizing it whole
    with ``special=True`` (what the model was trained on); a control string anywhere else stays text.
    """
    markers = TEMPLATE_TOKENS[fmt]
    ids: list[int] = llm.tokenize(b"", add_bos=True, special=False)  # BOS, where the vocabulary asks for one
    for piece in re.split("(" + "|".join(re.escape(m) for m in markers) + ")", prompt):
        if piece:
            ids += llm.tokenize(piece.encode("utf-8"), add_bos=False, special=piece in markers)
    return ids


def load_vocab(path: Path) -> Any:
    """llama.cpp's tokenizer of the GGUF at ``path`` alone (``vocab_only``: no weights, a fraction of a second):
    what engines without a tokenizer API count a model's tokens with."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise EngineUnavailable("llama-cpp-python is not installed: pip install 'medgpt[llamacpp]'") from exc
    try:
        return Llama(model_path=str(path), vocab_only=True, verbose=False)
    except (ValueError, RuntimeError, OSError) as exc:
        log.debug("could not load the vocabulary of %s: %s", path, exc)
        raise EngineUnavailable("could not load the model's tokenizer") from exc


def grammar_compiles(llm: Any, grammar: str, root: str = "root") -> bool:
    """Whether llama.cpp parses the GBNF ``grammar`` (builds its sampler on ``llm``'s vocabulary, then frees it)."""
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, grammar.encode("utf-8"), root.encode("utf-8"))
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def weights_present(spec: ModelSpec) -> bool:
    """Whether the model's GGUF (and adapter, if it has one) are on this machine."""
    return bool(spec.path and spec.path.exists() and (spec.adapter is None or spec.adapter.exists()))


def local_weights(spec: ModelSpec) -> ModelSpec:
    """``spec``, once its weights are known to be here; else :class:`ModelNotFound`."""
    if not weights_present(spec):
        missing = [p for p in (spec.path, spec.adapter) if p is not None and not p.exists()]
        raise ModelNotFound(f"model {spec.name!r} is configured but its weights are missing: {missing or 'no path'}")
    return spec


def verify_pins(digests: FileDigests, spec: ModelSpec) -> None:
    """:class:`ModelNotFound` unless the GGUF and adapter are the pinned files (or not pinned). The client's
    message names the model and the file's role; the paths and digests go to the server log."""
    for path, pinned, role in [(spec.path, spec.sha256, "GGUF"), (spec.adapter, spec.adapter_sha256, "adapter")]:
        if path is None:
            continue
        try:
            digests.check(path, pinned, f"the {role} {path}")
        except PinMismatch as exc:
            log.error("refusing model %s: %s", spec.name, exc)
            raise ModelNotFound(
                f"model {spec.name!r}: its {role} is not the pinned file (SHA-256 mismatch); refused"
            ) from None


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

    async def count_tokens(self, model: str, text: str) -> int:
        return len(await asyncio.to_thread(self._tokenize, model, text))

    def _tokenize(self, model: str, text: str) -> list[int]:
        """Tokens of ``text`` as :func:`tokenize_prompt` counts them: the format's turn markers as one token
        each, everything else as plain text (a rendered prompt's contents are already neutralized)."""
        # Tokenizing reads the vocabulary only: it need not wait behind a running generation, only for a load.
        llm = self._loaded.get(model)
        if llm is None:
            with self._lock:
                llm = self._load(model)
        return tokenize_prompt(llm, text, self.specs[model].prompt_format)

    # --- generation ----------------------------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        self.check(request)
        spec = self._spec(request.model)
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
                    self._generate_locked(spec, request, cancel, emit)
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

    def _generate_locked(self, spec: ModelSpec, request: GenerationRequest, cancel: threading.Event, emit) -> None:
        llm = self._load(spec.name)
        prompt = render(request.messages, spec.prompt_format)
        tokens = tokenize_prompt(llm, prompt, spec.prompt_format)
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
            stop=list(request.stop or STOP[spec.prompt_format]),
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
            if request.json_schema is not None:
                grammar = LlamaGrammar.from_json_schema(json.dumps(request.json_schema), verbose=False)
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
