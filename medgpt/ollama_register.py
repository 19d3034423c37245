"""Register configured GGUF models (and LoRA adapters) with an Ollama server: ``python -m medgpt.ollama_register``.

Used by compose.yaml's one-shot ``ollama-init`` step. It goes through Ollama's API (upload blobs, then ``create``
with the chat template and stop tokens of the model's :class:`~medgpt.templates.ChatTemplate`: the Go template that
renders what MedGPT renders, so the Ollama container needs no access to our files, and the template Ollama applies
is the one the model was trained with. A GGUF whose own Jinja template matches no format MedGPT can write for
Ollama is refused with its reason rather than registered with a template that renders something else.

Files are checked against their SHA-256 pins (``ModelSpec.sha256``/``adapter_sha256``) before upload, and the
digest Ollama stores the blob under must be that same one: a mismatch stops the whole run with exit status 1
(:class:`~medgpt.models.PinMismatch`), so compose never starts a gateway over models that are not the pinned ones.
"""

from __future__ import annotations

import argparse
import logging
import time

from medgpt.engines.base import EngineError
from medgpt.engines.gguf import GGUFVocabs
from medgpt.models import FileDigests, PinMismatch
from medgpt.settings import ModelSpec, Settings
from medgpt.templates import ChatTemplate, TemplateError

log = logging.getLogger("medgpt.ollama_register")


def create_request(spec: ModelSpec, digests: dict[str, str], template: ChatTemplate) -> dict:
    """Arguments for ``ollama.Client.create``: the Modelfile's FROM, ADAPTER, TEMPLATE and PARAMETER lines."""
    if template.ollama is None:
        raise TemplateError(
            f"model {spec.name!r}: its GGUF's chat template matches no format MedGPT can write as an Ollama "
            "template; set prompt_format to the model's family"
        )
    request = {
        "model": spec.remote or spec.name,
        "files": {spec.path.name: digests[str(spec.path)]},
        "template": template.ollama,
        "parameters": {"stop": list(template.stop), "num_ctx": spec.n_ctx, "temperature": 0.0},
    }
    if spec.adapter is not None:
        request["adapters"] = {spec.adapter.name: digests[str(spec.adapter)]}
    return request


def register(client, specs: list[ModelSpec], hasher: FileDigests | None = None) -> list[str]:
    """Upload each model's files once and create it; models whose files are missing are skipped with a warning.
    A pinned file whose SHA-256 is not its pin, here or as Ollama stored it, raises :class:`PinMismatch` before
    its model is created."""
    hasher = hasher or FileDigests()
    vocabs = GGUFVocabs()
    digests: dict[str, str] = {}
    created = []
    for spec in specs:
        pinned = [(spec.path, spec.sha256, "GGUF"), (spec.adapter, spec.adapter_sha256, "adapter")]
        files = [p for p, _, _ in pinned if p is not None]
        if not files or not all(p.exists() for p in files):
            log.warning("skipping %s: missing %s", spec.name, [str(p) for p in files if not p.exists()])
            continue
        template = vocabs.template(spec)  # an unusable one stops the run before anything is uploaded
        for path, pin, role in pinned:
            if path is None:
                continue
            what = f"the {role} of model {spec.name!r} ({path})"
            hasher.check(path, pin, what)
            if str(path) not in digests:
                digests[str(path)] = client.create_blob(path)
            if pin is not None and digests[str(path)] != f"sha256:{pin}":
                raise PinMismatch(f"{what} was stored by Ollama as {digests[str(path)]}, not the pinned {pin}")
        client.create(**create_request(spec, digests, template), stream=False)
        created.append(spec.remote or spec.name)
        log.info("created %s", created[-1])
    return created


def main(argv: list[str] | None = None) -> int:
    import ollama

    from medgpt.models import ensure_packaged_ggufs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="Ollama URL (default: settings ollama.host)")
    parser.add_argument("--wait", type=float, default=120, help="seconds to wait for the server")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    settings = Settings()
    ensure_packaged_ggufs(settings.models_dir)
    client = ollama.Client(host=args.host or settings.ollama.host)
    deadline = time.monotonic() + args.wait
    while True:
        try:
            client.list()
            break
        except Exception as exc:  # noqa: BLE001 - connection refused while the server starts
            if time.monotonic() > deadline:
                log.error("Ollama did not answer: %s", exc)
                return 1
            time.sleep(2)
    try:
        created = register(client, [m for m in settings.models if m.path is not None])
    except PinMismatch as exc:
        log.error("refused: %s (python -m medgpt.models pin, after checking the file, updates the pin)", exc)
        return 1
    except (TemplateError, EngineError) as exc:  # a model whose chat template cannot be written for Ollama
        log.error("refused: %s", exc)
        return 1
    return 0 if created else 1


if __name__ == "__main__":
    raise SystemExit(main())
