"""``register``: create the exported model in Ollama when a server answers; otherwise say so and skip.

The request is built by :mod:`medgpt.ollama_register` (the same one compose's ``ollama-init`` uses): blobs are
uploaded through the API, then ``create`` with FROM/ADAPTER and the model's chat template (its Ollama form) and stop
strings (:mod:`medgpt.templates`, resolved from the base GGUF under ``prompt_format`` as training resolved it), so the
server needs no access to our files. Without the ``ollama`` Python client the
``ollama`` CLI is used with the Modelfile written by ``export``. No server can run on our CPU machines (see the
notes), so here this stage reports why it skipped.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx

from finetune.config import FinetuneConfig

log = logging.getLogger(__name__)


def server_version(host: str, timeout: float = 3.0) -> str | None:
    """The Ollama server's version, or None when nothing answers at ``host``."""
    try:
        resp = httpx.get(host.rstrip("/") + "/api/version", timeout=timeout)
        resp.raise_for_status()
        return resp.json().get("version", "unknown")
    except (httpx.HTTPError, ValueError):
        return None


def model_files(cfg: FinetuneConfig) -> tuple[Path, Path | None, Path]:
    """(FROM, ADAPTER, Modelfile) for the configured source artifact."""
    source = cfg.ollama.source
    if source == "adapter":
        return cfg.base.gguf, cfg.adapter_gguf, cfg.models_dir / f"{cfg.name}.Modelfile"
    return (
        cfg.models_dir / f"{cfg.name}-{source}.gguf",
        None,
        cfg.models_dir / f"{cfg.name}-{source}.Modelfile",
    )


def register(cfg: FinetuneConfig) -> dict[str, Any]:
    from finetune.modelfile import write_modelfile

    base, adapter, modelfile = model_files(cfg)
    missing = [str(p) for p in (base, adapter) if p is not None and not p.exists()]
    if missing:
        raise FileNotFoundError(f"register: missing {missing}: run the export stage first")
    if not modelfile.exists():
        from finetune.base_model import base_template

        # the template the rows were rendered in (resolved from the base GGUF, whichever artifact is registered)
        template = base_template(cfg.base.gguf, cfg.data.prompt_format, cfg.name)
        write_modelfile(modelfile, base, adapter=adapter, template=template)
    result: dict[str, Any] = {"model": cfg.name, "source": cfg.ollama.source, "modelfile": str(modelfile)}
    if not cfg.ollama.enabled:
        log.info("register: disabled in the config (ollama.enabled: false)")
        return result | {"registered": False, "reason": "disabled"}
    version = server_version(cfg.ollama.host)
    if version is None:
        msg = (
            f"no Ollama server answers at {cfg.ollama.host}: skipped. Start one (`ollama serve`) and run "
            f"`python -m finetune register`, or `ollama create {cfg.name} -f {modelfile}`."
        )
        log.warning("register: %s", msg)
        return result | {"registered": False, "reason": msg}

    if importlib.util.find_spec("ollama") is not None:
        import ollama

        from medgpt.ollama_register import register as create_models
        from medgpt.settings import ModelSpec

        spec = ModelSpec(name=cfg.name, path=base, adapter=adapter, prompt_format=cfg.data.prompt_format)
        created = create_models(ollama.Client(host=cfg.ollama.host), [spec])
        via = "ollama python client"
    elif shutil.which("ollama"):
        env = {**os.environ, "OLLAMA_HOST": cfg.ollama.host}
        subprocess.run(["ollama", "create", cfg.name, "-f", str(modelfile)], check=True, env=env)
        created, via = [cfg.name], "ollama CLI"
    else:
        raise RuntimeError(
            "register: an Ollama server answers but neither the `ollama` package nor CLI is installed"
        )
    log.info("register: created %s in Ollama %s via the %s", created, version, via)
    return result | {"registered": bool(created), "server_version": version, "via": via}
