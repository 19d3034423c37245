"""Register configured GGUF models (and LoRA adapters) with an Ollama server: ``python -m medgpt.ollama_register``.

Used by compose.yaml's one-shot ``ollama-init`` step. It goes through Ollama's API (upload blobs, then ``create``
with the chat template and stop tokens from :mod:`medgpt.prompts`), so the Ollama container needs no access to our
files, and the template Ollama applies is the one the model was trained with.
"""

from __future__ import annotations

import argparse
import logging
import time

from medgpt.prompts import OLLAMA_TEMPLATES, STOP
from medgpt.settings import ModelSpec, Settings

log = logging.getLogger("medgpt.ollama_register")


def create_request(spec: ModelSpec, digests: dict[str, str]) -> dict:
    """Arguments for ``ollama.Client.create``: the Modelfile's FROM, ADAPTER, TEMPLATE and PARAMETER lines."""
    request = {
        "model": spec.remote or spec.name,
        "files": {spec.path.name: digests[str(spec.path)]},
        "template": OLLAMA_TEMPLATES[spec.prompt_format],
        "parameters": {"stop": list(STOP[spec.prompt_format]), "num_ctx": spec.n_ctx, "temperature": 0.0},
    }
    if spec.adapter is not None:
        request["adapters"] = {spec.adapter.name: digests[str(spec.adapter)]}
    return request


def register(client, specs: list[ModelSpec]) -> list[str]:
    """Upload each model's files once and create it; models whose files are missing are skipped with a warning."""
    digests: dict[str, str] = {}
    created = []
    for spec in specs:
        files = [p for p in (spec.path, spec.adapter) if p is not None]
        if not files or not all(p.exists() for p in files):
            log.warning("skipping %s: missing %s", spec.name, [str(p) for p in files if not p.exists()])
            continue
        for path in files:
            if str(path) not in digests:
                digests[str(path)] = client.create_blob(path)
        client.create(**create_request(spec, digests), stream=False)
        created.append(spec.remote or spec.name)
        log.info("created %s", created[-1])
    return created


def main(argv: list[str] | None = None) -> int:
    import ollama

    from medgpt.models import ensure_default_gguf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="Ollama URL (default: settings ollama.host)")
    parser.add_argument("--wait", type=float, default=120, help="seconds to wait for the server")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    settings = Settings()
    ensure_default_gguf(settings.models_dir)
    client = ollama.Client(host=args.host or settings.ollama.host)
    deadline = time.monotonic() + args.wait
    while True:
        try:
            client.list()
            break
        except Exception as exc:  # connection refused while the server starts
            if time.monotonic() > deadline:
                log.error("Ollama did not answer: %s", exc)
                return 1
            time.sleep(2)
    created = register(client, [m for m in settings.models if m.path is not None])
    return 0 if created else 1


if __name__ == "__main__":
    raise SystemExit(main())
