"""Ollama Modelfiles for the exported models.

The Modelfile carries the model's chat template as Ollama's Go template (:attr:`medgpt.templates.ChatTemplate.ollama`),
which renders messages exactly as the training prompts were rendered, and its stop strings: without
``PARAMETER stop <end_of_turn>`` a fine-tuned GGUF talks past its answer, the commonest complaint about them.
"""

from __future__ import annotations

import os
from pathlib import Path

from medgpt.templates import ChatTemplate, TemplateError, named

#: Ollama's default context (2048 in older releases, less on small machines) silently truncates long prompts.
DEFAULT_NUM_CTX = 4096


def _ref(path: Path, modelfile_dir: Path) -> str:
    """A path as the Modelfile should name it: relative to the Modelfile (Ollama resolves it from there)."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(modelfile_dir))
    return rel if rel.startswith("..") else f"./{rel}"


def modelfile_text(
    base: Path,
    modelfile_dir: Path,
    adapter: Path | None = None,
    num_ctx: int = DEFAULT_NUM_CTX,
    system: str | None = None,
    template: ChatTemplate | None = None,
) -> str:
    """The Modelfile for ``base`` (a GGUF), optionally with a LoRA ``adapter`` GGUF applied on top, in ``template``
    (default: the ``gemma`` format)."""
    template = template or named("gemma")
    if template.ollama is None:
        raise TemplateError("the model's chat template has no Ollama equivalent; set prompt_format")
    lines = [f"FROM {_ref(base, modelfile_dir)}"]
    if adapter is not None:
        lines.append(f"ADAPTER {_ref(adapter, modelfile_dir)}")
    lines.append(f'TEMPLATE """{template.ollama}"""')
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f"PARAMETER stop {stop}" for stop in template.stop]
    lines += [
        f"PARAMETER num_ctx {num_ctx}",
        "PARAMETER temperature 0",
    ]
    return "\n".join(lines) + "\n"


def write_modelfile(path: Path, base: Path, adapter: Path | None = None, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(modelfile_text(base, path.parent, adapter, **kwargs))
    return path
