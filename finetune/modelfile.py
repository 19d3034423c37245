"""Ollama Modelfiles for the exported models.

The base GGUF has no chat template, so the Modelfile carries one: a Go template that renders messages exactly as
:func:`medgpt.prompts.render` does for the ``gemma`` format (system text prepended to the next user turn with a
blank line, every turn closed by ``<end_of_turn>\\n``, an open ``<start_of_turn>model\\n`` at the end). Without
``PARAMETER stop <end_of_turn>`` a fine-tuned GGUF talks past its answer: the commonest complaint about them.
"""

from __future__ import annotations

import os
from pathlib import Path

from medgpt.prompts import GEMMA_END, GEMMA_START

GEMMA_TEMPLATE = (
    '{{- $system := "" }}\n'
    "{{- range .Messages }}\n"
    '{{- if eq .Role "system" }}{{ $system = printf "%s%s\\n\\n" $system .Content }}\n'
    f'{{{{- else }}}}{GEMMA_START}{{{{ if eq .Role "assistant" }}}}model{{{{ else }}}}user{{{{ end }}}}\n'
    '{{ if and (eq .Role "user") $system }}{{ $system }}{{ $system = "" }}{{ end }}'
    f"{{{{ .Content }}}}{GEMMA_END}\n"
    "{{ end }}\n"
    f"{{{{- end }}}}{GEMMA_START}model\n"
)

#: Ollama's default context (2048 in older releases, less on small machines) silently truncates long prompts.
DEFAULT_NUM_CTX = 4096


def _ref(path: Path, modelfile_dir: Path) -> str:
    """A path as the Modelfile should name it: relative to the Modelfile (Ollama resolves it from there)."""
    rel = os.path.relpath(Path(path).resolve(), Path(modelfile_dir).resolve())
    return rel if rel.startswith("..") else f"./{rel}"


def modelfile_text(
    base: Path,
    modelfile_dir: Path,
    adapter: Path | None = None,
    num_ctx: int = DEFAULT_NUM_CTX,
    system: str | None = None,
) -> str:
    """The Modelfile for ``base`` (a GGUF), optionally with a LoRA ``adapter`` GGUF applied on top."""
    lines = [f"FROM {_ref(base, modelfile_dir)}"]
    if adapter is not None:
        lines.append(f"ADAPTER {_ref(adapter, modelfile_dir)}")
    lines.append(f'TEMPLATE """{GEMMA_TEMPLATE}"""')
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [
        f"PARAMETER stop {GEMMA_END}",
        f"PARAMETER num_ctx {num_ctx}",
        "PARAMETER temperature 0",
    ]
    return "\n".join(lines) + "\n"


def write_modelfile(path: Path, base: Path, adapter: Path | None = None, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(modelfile_text(base, path.parent, adapter, **kwargs))
    return path
