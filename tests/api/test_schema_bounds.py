"""A client's ``response_format`` schema on ``/v1/chat/completions`` cannot hold the engine (issue 21, item 1).

- Over a bound (medgpt/schema_limits.py): a 400 in OpenAI's shape while the body is read, before the model, the
  admission queue or any engine sees it, on every engine (the in-process one, llama-server, Ollama's ``format``).
- Converted to a grammar before the request takes its turn in the queue: a schema the converter refuses is a 400
  even when the queue is full, and the grammar engines get GBNF text, never the schema.
- With the real engine and GGUF: a constrained request that times out (504) frees the engine within a token, and
  the next request is served at once; the 20,000-string enum that used to hold the engine for minutes after its
  504 is refused at once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from medgpt import schema_limits
from medgpt.engines import Chunk, GenerationRequest, Overloaded
from medgpt.engines.llamaserver import LlamaServerEngine
from medgpt.settings import ModelSpec, OllamaSettings, Settings
from tests.api.test_faults import serving, until, with_
from tests.medgpt.ollama_stub import OllamaStub

QUESTION = [{"role": "user", "content": "The diagnosis, as JSON."}]


def body(schema: dict, **extra) -> dict:
    return {"model": "medgpt", "messages": QUESTION, "max_tokens": 8,
            "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}, **extra}  # fmt: skip


def nested(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


#: The shapes of issue 21: each held the engine (or would be sent to a server to compile) before.
BAD = {
    "enum-20000": {"enum": [f"diagnosis {i}" for i in range(20_000)]},
    "anyof-identical-strings": {"anyOf": [{"type": "string"}] * 8},
    "deep-nesting": nested(40),
    "remote-ref": {"type": "object", "properties": {"a": {"$ref": "https://example.org/schema.json"}}},
    "maxlength-million": {"type": "string", "maxLength": 1_000_000},
}


def assert_refused(r: httpx.Response) -> None:
    assert r.status_code == 400, r.text[:300]
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_value"
    assert error["param"].startswith("response_format"), error
    assert "diagnosis 1" not in error["message"] and "example.org" not in error["message"]


def full_queue(app) -> list[int]:
    """The app's admission queue answers every request as full (503), as a busy engine's would; returns the
    list the number of refusals is appended to."""
    refused: list[int] = []

    async def busy(deadline=None):
        refused.append(1)
        raise Overloaded("the server is busy (test)", retry_after=5)

    app.state.gateway.admission.acquire = busy
    return refused


@pytest.mark.parametrize("name", list(BAD))
def test_a_schema_over_a_bound_is_a_400_before_the_queue(settings, engine, name):
    app = create_app(with_(settings), engine)
    queued = full_queue(app)  # a request that got as far as the queue would be a 503
    client = TestClient(app)  # no lifespan: nothing warms the model; a refused schema needs none
    started = time.monotonic()
    r = client.post("/v1/chat/completions", json=body(BAD[name]))
    assert time.monotonic() - started < 2
    assert_refused(r)
    assert queued == [] and not engine._lock.locked()


def test_a_schema_is_converted_before_the_queue(settings, engine, monkeypatch):
    """A schema within the bounds that the converter refuses (a pattern it does not support) is a 400 even with
    the queue full: converted before a turn is taken. One it converts reaches the queue (here: full, 503)."""
    app = create_app(with_(settings), engine)
    queued = full_queue(app)
    client = TestClient(app)
    unsupported = {"type": "string", "pattern": "^(?=lookahead)a$"}
    schema_limits.check(unsupported)  # within every bound...
    r = client.post("/v1/chat/completions", json=body(unsupported))
    assert_refused(r)  # ...refused by the conversion, not by the full queue
    assert "converter does not support" in r.json()["error"]["message"] and queued == []
    converted: list[str] = []
    real = schema_limits.to_grammar
    monkeypatch.setattr(schema_limits, "to_grammar", lambda s: converted.append(real(s)) or converted[-1])
    r = client.post("/v1/chat/completions", json=body({"type": "object"}))
    assert r.status_code == 503 and queued == [1] and converted and "root ::=" in converted[0]


class Recorder:
    """Stands in for an engine's generate: records the request, answers ``{}``."""

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    async def __call__(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        self.requests.append(request)
        yield Chunk(text="{}")
        yield Chunk(done=True, prompt_tokens=5, completion_tokens=1, finish_reason="stop")


def test_llamaserver_gets_a_bounded_grammar_and_never_a_refused_schema(settings, monkeypatch):
    specs = [ModelSpec(name="medgpt", path=settings.model("medgpt").path, n_ctx=2048)]
    engine = LlamaServerEngine(specs)
    recorder = Recorder()
    monkeypatch.setattr(engine, "generate", recorder)
    app = create_app(settings.model_copy(update={"engine": "llamaserver", "models": specs}), engine)
    client = TestClient(app)
    for schema in BAD.values():
        assert_refused(client.post("/v1/chat/completions", json=body(schema)))
    assert recorder.requests == [] and engine._servers == {}  # nothing sent; no server even started
    schema = {"type": "object", "properties": {"dx": {"enum": ["flu", "cold"]}}, "required": ["dx"]}
    r = client.post("/v1/chat/completions", json=body(schema))
    assert r.status_code == 200, r.text
    (sent,) = recorder.requests
    # the server compiles GBNF of bounded size, not the client's schema with its own converter
    assert sent.json_schema is None and "root ::=" in sent.grammar
    assert len(sent.grammar.encode()) <= schema_limits.LIMITS.max_grammar_bytes


def test_ollama_format_is_bounded_before_it_is_sent():
    specs = [ModelSpec(name="medgpt", n_ctx=4096)]
    with OllamaStub(['{"dx": "flu"}']) as stub:
        settings = Settings(engine="ollama", default_model="medgpt", models=specs,
                            ollama=OllamaSettings(host=stub.url))  # fmt: skip
        client = TestClient(create_app(settings))
        for schema in BAD.values():
            assert_refused(client.post("/v1/chat/completions", json=body(schema)))
        assert [r for r in stub.requests if r["path"] == "/api/chat"] == []  # nothing reached Ollama
        schema = {"type": "object", "properties": {"dx": {"type": "string"}}, "required": ["dx"]}
        r = client.post("/v1/chat/completions", json=body(schema))
        assert r.status_code == 200, r.text
        assert stub.requests[-1]["format"] == schema  # Ollama compiles it; within the bounds


#: The heaviest schema within the bounds (64 enum values open at once: the widest a token's check gets) and a
#: generation that runs past the deadline: a list of at least 256 items (about a thousand tokens).
WIDEST = {"type": "array", "minItems": schema_limits.LIMITS.max_repeat,
          "items": {"anyOf": [{"enum": [f"finding {i}" for i in range(32)]},
                              {"enum": [f"code {i}" for i in range(32)]}]}}  # fmt: skip


@pytest.mark.parametrize("schema", [WIDEST, BAD["enum-20000"]], ids=["widest-allowed", "enum-20000"])
def test_a_constrained_request_that_times_out_frees_the_engine(settings, engine, schema):
    """After the answer (a 504 at the deadline, or a 400 at once for a schema over the bounds) the engine is free
    within a token and the next request is served at once. Before the bounds the 20,000-string enum was compiled
    and applied under the engine's lock: the 504 came at the deadline while the thread kept the lock (a token
    checks every vocabulary entry against every enum value) and the next request waited behind it."""
    deadline = 2.0
    app = create_app(with_(settings, generation_timeout=deadline, request_timeout=deadline), engine)
    admission = app.state.gateway.admission
    with serving(app) as url:
        started = time.monotonic()
        r = httpx.post(f"{url}/v1/chat/completions", timeout=120, json=body(
            schema, model="gemma3-270m", max_tokens=1024, temperature=2.0, seed=1,
            messages=[{"role": "user", "content": "List every finding of a chest X-ray."}]))  # fmt: skip
        elapsed = time.monotonic() - started
        if r.status_code == 400:  # over the bounds: refused before the engine
            assert elapsed < 2, elapsed
        else:
            assert r.status_code == 504, r.text[:300]
            assert deadline <= elapsed < deadline + 3, elapsed
        until(lambda: not engine._lock.locked() and admission.running == 0, 2, "the engine to be free")
        started = time.monotonic()
        after = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
            "model": "gemma3-270m", "messages": QUESTION, "max_tokens": 4})  # fmt: skip
        assert after.status_code == 200, after.text
        assert time.monotonic() - started < 15  # four tokens; not behind a held lock
