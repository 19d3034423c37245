"""What every engine that reads a GGUF file needs from it: the weights checked, the tokenizer, the chat template.

- Weights are checked against their SHA-256 pins (``ModelSpec.sha256``/``adapter_sha256``) before anything loads or
  uploads them: a mismatch is :class:`ModelNotFound` (the pinned weights are not here, exactly as when the file is
  missing; retrying will not help, so not the 503 of :class:`EngineUnavailable`).
- The tokenizer is llama.cpp's, loaded ``vocab_only`` (no weights, a fraction of a second). Prompts are tokenized
  with only the template's own markers read as special tokens (:func:`tokenize_prompt`), so a note cannot forge a
  turn or slip in any other control token, and the same ids go to the in-process engine and to ``llama-server``.
- The chat template is the GGUF's own (``tokenizer.chat_template``) unless the config names a format
  (:func:`model_template`); it is read once per model with the vocabulary, and a template that cannot render our
  conversations is refused then (:class:`UnusableTemplate`).
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

from medgpt.engines.base import EngineUnavailable, ModelNotFound, UnusableTemplate
from medgpt.models import FileDigests, PinMismatch
from medgpt.settings import ModelSpec
from medgpt.templates import NAMED_FORMATS, ChatTemplate, TemplateError, from_jinja, named

log = logging.getLogger(__name__)


def load_vocab(path: Path) -> Any:
    """llama.cpp's tokenizer of the GGUF at ``path`` alone (``vocab_only``: no weights, a fraction of a second),
    with the GGUF's metadata (``.metadata``): what engines count tokens and find the chat template with."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise EngineUnavailable("llama-cpp-python is not installed: pip install 'medgpt[llamacpp]'") from exc
    try:
        return Llama(model_path=str(path), vocab_only=True, verbose=False)
    except (ValueError, RuntimeError, OSError) as exc:
        log.debug("could not load the vocabulary of %s: %s", path, exc)
        raise EngineUnavailable("could not load the model's tokenizer") from exc


def special_markers(llm: Any, template: ChatTemplate) -> list[str]:
    """The template's markers that are one control token in ``llm``'s vocabulary. Others (Llama 2's ``[INST]``,
    plain text in its vocabulary) are left in the text around them, tokenized as the model was trained on them."""
    return [m for m in template.markers if len(llm.tokenize(m.encode("utf-8"), add_bos=False, special=True)) == 1]


def tokenize_prompt(llm: Any, prompt: str, template: ChatTemplate) -> list[int]:
    """Token ids of a rendered ``prompt`` (BOS first where the vocabulary asks for one and the template did not
    write it) with only the template's markers read as special tokens and every other byte as plain text.

    llama.cpp with ``special=True`` splits the text around special tokens and tokenizes each piece on its own, so
    for a prompt whose only control strings are the template's this gives the same ids as tokenizing it whole
    with ``special=True`` (what the model was trained on); a control string anywhere else stays text.
    """
    markers = special_markers(llm, template)
    wrote_bos = bool(template.bos) and prompt.startswith(template.bos)
    ids: list[int] = [] if wrote_bos else llm.tokenize(b"", add_bos=True, special=False)
    pieces = re.split("(" + "|".join(map(re.escape, markers)) + ")", prompt) if markers else [prompt]
    for piece in pieces:
        if piece:
            ids += llm.tokenize(piece.encode("utf-8"), add_bos=False, special=piece in markers)
    return ids


def model_template(spec: ModelSpec, vocab: Any | None) -> ChatTemplate:
    """The chat template of ``spec``: its named ``prompt_format``; else (``auto``, ``gguf``) the GGUF's own
    Jinja template with the GGUF's BOS, EOS and end-of-turn tokens; else, for ``auto``, the family's format by the
    GGUF's architecture (Gemma GGUFs without a template, such as the 270M base). :class:`UnusableTemplate` when
    none fits, naming the fix."""
    fmt = spec.prompt_format
    try:
        if fmt in NAMED_FORMATS:
            return named(fmt)
        meta: dict[str, str] = getattr(vocab, "metadata", None) or {}
        source = meta.get("tokenizer.chat_template")
        if source:
            text = lambda key: _token_text(vocab, meta.get(f"tokenizer.ggml.{key}_token_id"))  # noqa: E731
            return from_jinja(source, text("bos"), text("eos"), stop=[text("eot"), text("eom")])
        arch = meta.get("general.architecture", "")
        if fmt == "auto" and arch.startswith("gemma"):
            return named("gemma")
        raise TemplateError(
            f"its GGUF has no chat template (architecture {arch or 'unknown'!r}); set prompt_format to one of "
            + ", ".join(NAMED_FORMATS)
        )
    except TemplateError as exc:
        raise UnusableTemplate(f"model {spec.name!r}: {exc}") from None


def _token_text(vocab: Any, token_id: str | None) -> str:
    """The text of a token id from the metadata (as llama-cpp-python itself reads BOS/EOS for its formatter)."""
    if token_id is None or int(token_id) < 0:
        return ""
    return vocab._model.token_get_text(int(token_id))


class GGUFVocabs:
    """Each GGUF's vocabulary (loaded once, ``vocab_only``) and each model's chat template, shared by an engine's
    threads: llama.cpp's tokenizer is not safe to use from two threads at once, so every use holds the lock."""

    def __init__(self) -> None:
        self._vocabs: dict[Path, Any] = {}
        self._templates: dict[str, ChatTemplate] = {}
        self._lock = threading.Lock()

    def _vocab(self, path: Path) -> Any:
        vocab = self._vocabs.get(path)
        if vocab is None:
            vocab = self._vocabs[path] = load_vocab(path)
        return vocab

    def template(self, spec: ModelSpec) -> ChatTemplate:
        """``spec``'s chat template (blocking: the first call per model may load the vocabulary)."""
        with self._lock:
            template = self._templates.get(spec.name)
            if template is None:
                needs_gguf = spec.prompt_format not in NAMED_FORMATS and spec.path is not None and spec.path.exists()
                vocab = self._vocab(spec.path) if needs_gguf else None
                template = self._templates[spec.name] = model_template(spec, vocab)
            return template

    def tokenize(self, spec: ModelSpec, text: str) -> list[int]:
        """Token ids of a prompt rendered in ``spec``'s template (blocking)."""
        template = self.template(spec)
        with self._lock:
            return tokenize_prompt(self._vocab(spec.path), text, template)


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
