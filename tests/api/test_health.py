"""``/ready`` follows the engine: 503 + Retry-After while its server is down, 200 again once it is back; and what
clients are told about engine errors carries no server paths, backend URLs or upstream text.

The engine server is llama-cpp-python's OpenAI-compatible server with the real GGUF on a loopback port, stopped and
started again on the same port by the test.
"""

from __future__ import annotations

import logging
import time

import pytest
from fastapi.testclient import TestClient

from api.errors import client_message
from api.main import create_app
from api.routes.health import Readiness
from medgpt.engines import (
    EngineError,
    EngineUnavailable,
    GenerationTimeout,
    ModelNotFound,
    Overloaded,
    PromptTooLong,
)
from medgpt.settings import Limits, ModelSpec, OpenAISettings
from tests._net import free_port


def remote_settings(settings, base_url: str):
    return settings.model_copy(update={
        "engine": "openai",
        "default_model": "remote",
        "models": [ModelSpec(name="remote", remote="gemma-remote", n_ctx=1024)],
        "openai": OpenAISettings(base_url=base_url, api_key="test", json_mode="json_object", max_retries=0),
        "limits": Limits(generation_timeout=120),
    })  # fmt: skip


def poll(client: TestClient, status: int, timeout: float) -> tuple:
    """GET /ready until it answers ``status``; the response and the seconds it took."""
    started = time.monotonic()
    while True:
        r = client.get("/ready")
        if r.status_code == status:
            return r, time.monotonic() - started
        assert time.monotonic() - started < timeout, f"/ready still {r.status_code} after {timeout} s: {r.text}"
        time.sleep(0.2)


def test_ready_turns_503_while_the_engine_server_is_down_and_200_when_it_is_back(settings, engine_server):
    proc = engine_server()
    app = create_app(remote_settings(settings, engine_server.url))
    with TestClient(app) as client:
        r, _ = poll(client, 200, 120)
        assert r.json() == {"status": "ready", "model": "remote", "engine": "openai"}
        readiness = app.state.readiness
        assert isinstance(readiness, Readiness) and readiness.ttl == 5.0

        proc.kill()  # the engine's server goes away
        proc.wait()
        # The last answer is reused for a few seconds (probes cost nothing), then the engine is checked again.
        cached = client.get("/ready")
        assert cached.status_code == 200
        down, waited = poll(client, 503, 30)
        assert waited <= readiness.ttl + 5, waited
        assert down.headers["retry-after"] == "5"
        body = down.json()
        assert body["status"] == "not ready" and body["model"] == "remote" and body["detail"]
        for secret in ("http", "127.0.0.1", str(engine_server.port), "/v1"):
            assert secret not in body["detail"], body
        assert client.get("/health").status_code == 200  # alive, only not ready
        # a request meets the same: 503 + Retry-After, with nothing of the backend in the body
        ask = client.post("/ask", json={"question": "Define fever.", "max_tokens": 4})
        assert ask.status_code == 503 and ask.headers["retry-after"]
        assert "127.0.0.1" not in ask.text and "http" not in ask.text, ask.text

        engine_server()  # back on the same port
        back, _ = poll(client, 200, readiness.ttl + 30)
        assert back.json()["status"] == "ready"
        assert client.post("/ask", json={"question": "Define fever.", "max_tokens": 4}).status_code == 200


def test_ready_is_503_when_the_default_models_weights_are_gone(settings, engine, tmp_path):
    """The embedded engine: ready once warm, and not ready when its weights disappear (re-checked by listing the
    models, without a generation)."""
    weights = tmp_path / "model.gguf"
    weights.symlink_to(settings.models[0].path)
    local = settings.model_copy(update={
        "default_model": "vanishing",
        "models": [*settings.models, ModelSpec(name="vanishing", path=weights, n_ctx=512)],
    })  # fmt: skip
    from medgpt.engines.llamacpp import LlamaCppEngine

    own = LlamaCppEngine(local.models, local.llamacpp)
    app = create_app(local, own)
    app.state.readiness = Readiness(ttl=0.2)  # short, so the test need not wait
    try:
        with TestClient(app) as client:
            poll(client, 200, 120)
            weights.unlink()
            r, _ = poll(client, 503, 10)
            assert r.headers["retry-after"] == "1"
            assert str(tmp_path) not in r.text and "model.gguf" not in r.text, r.text
            weights.symlink_to(settings.models[0].path)
            poll(client, 200, 10)
    finally:
        import asyncio

        asyncio.run(own.aclose())


# --- what clients are told about engine errors ----------------------------------------------------------------


def test_missing_weights_reach_the_client_without_their_path(client, engine, caplog):
    with pytest.raises(ModelNotFound) as raised:  # the engine's own message names the missing file...
        engine._spec("missing-weights")
    assert "does-not-exist.gguf" in str(raised.value)
    with caplog.at_level(logging.DEBUG, logger="medgpt.api"):
        r = client.post("/ask", json={"question": "q", "model": "missing-weights"})
    assert r.status_code == 404
    assert r.json()["detail"] == "the requested model is not available on this server"  # ...the client's does not
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING]
    debug = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.DEBUG]
    assert warnings and not any("does-not-exist.gguf" in m for m in warnings), warnings
    assert any("does-not-exist.gguf" in m for m in debug), debug  # the full text: server log, DEBUG only


def test_an_unreachable_backend_reaches_the_client_without_its_url(settings):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with TestClient(create_app(remote_settings(settings, url))) as client:
        for body in ({"question": "Define fever.", "max_tokens": 4},
                     {"question": "Define fever.", "max_tokens": 4, "stream": True}):  # fmt: skip
            r = client.post("/ask", json=body)
            assert r.status_code == 503 and r.headers["retry-after"], r.text
            assert r.json()["detail"] == "the model's engine is unavailable; retry later"
        ready = client.get("/ready")
        assert ready.status_code == 503 and "127.0.0.1" not in ready.text and "http" not in ready.text


def _wrapping(error: EngineError, cause: Exception) -> EngineError:
    try:
        try:
            raise cause
        except Exception as exc:
            raise error from exc
    except EngineError as exc:
        return exc


@pytest.mark.parametrize("error,told", [
    # the core's own sentences pass: model names the client sent, token counts, limits
    (ModelNotFound("unknown model 'gpt-17'; available: ['medgpt']"), "unknown model 'gpt-17'; available: ['medgpt']"),
    (PromptTooLong("prompt is 5000 tokens; model 'medgpt' holds 4096 (prompt + answer)"),
     "prompt is 5000 tokens; model 'medgpt' holds 4096 (prompt + answer)"),
    (GenerationTimeout("generation exceeded 120 s"), "generation exceeded 120 s"),
    (Overloaded("the server is busy: 1 running and 8 waiting, the most it queues", 3.0),
     "the server is busy: 1 running and 8 waiting, the most it queues"),
    # a location in the text: the plain sentence of the kind
    (ModelNotFound("model 'x' is configured but its weights are missing: [PosixPath('/srv/models/x.gguf')]"),
     "the requested model is not available on this server"),
    (ModelNotFound("model 'x' is configured but its weights are missing: ['models/x.gguf']"),
     "the requested model is not available on this server"),
    (EngineUnavailable("cannot reach Ollama at http://10.0.0.7:11434"), "the model's engine is unavailable; retry later"),
    (EngineError(r"could not open C:\models\x.gguf"), "the model's engine failed"),
    # wrapping another exception: its text is upstream's
    (_wrapping(PromptTooLong("Error code: 400 - This model's maximum context length is 8192 tokens"),
               ValueError("upstream")), "the prompt has too many tokens for the model's context"),
    (_wrapping(EngineError("Ollama answered 500: llama runner process has terminated"), RuntimeError("x")),
     "the model's engine failed"),
    (EngineError(""), "the model's engine failed"),
    (EngineError("x" * 1000), "the model's engine failed"),
], ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None)  # fmt: skip
def test_client_message(error, told):
    assert client_message(error) == told


def test_model_names_with_slashes_pass():
    assert client_message(ModelNotFound("unknown model 'meta-llama/llama-3.1-8b'")) == (
        "unknown model 'meta-llama/llama-3.1-8b'"
    )
