"""The Ollama engine (official client) against a loopback stub of Ollama's API, and against a closed port.

The stub (tests/medgpt/ollama_stub.py) stands in for an Ollama server, which cannot be installed here.
"""

import asyncio
import time

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from medgpt import prompts, tasks, templates
from medgpt.engines import (
    EngineUnavailable,
    GenerationRequest,
    GenerationTimeout,
    ModelNotFound,
    PromptTooLong,
    complete,
)
from medgpt.engines.gguf import load_vocab, tokenize_prompt
from medgpt.engines.ollama import OllamaEngine
from medgpt.settings import Limits, ModelSpec, OllamaSettings, Settings
from tests._net import free_port
from tests.conftest import MCQ
from tests.medgpt.ollama_stub import OllamaStub

SPECS = [ModelSpec(name="medgpt", n_ctx=4096, quantization="Q4_K_M")]


def engine_for(url: str) -> OllamaEngine:
    return OllamaEngine(SPECS, OllamaSettings(host=url), timeout=10)


def test_streams_and_passes_num_ctx():
    with OllamaStub(["Influenza causes fever and myalgia."]) as stub:
        out = asyncio.run(complete(engine_for(stub.url), GenerationRequest(
            "medgpt", [{"role": "user", "content": "flu?"}], max_tokens=20, seed=3)))
    assert out.text == "Influenza causes fever and myalgia."
    assert (out.prompt_tokens, out.completion_tokens) == (42, 5)
    sent = stub.requests[0]
    assert sent["path"] == "/api/chat" and sent["model"] == "medgpt"
    assert sent["options"]["num_ctx"] == 4096 and sent["options"]["num_predict"] == 20 and sent["options"]["seed"] == 3


def test_mcq_parses_a_compliant_answer():
    reply = "<analysis>White cell casts mean kidney infection.</analysis>\n<answer>B: Acute pyelonephritis</answer>"
    with OllamaStub([reply]) as stub:
        r = asyncio.run(tasks.answer_mcq(engine_for(stub.url), "medgpt", MCQ["question"], MCQ["options"]))
    assert (r.choice, r.well_formed, r.rescued) == ("B", True, False)
    assert r.analysis == "White cell casts mean kidney infection."


def test_mcq_rescue_sends_a_json_schema_format():
    with OllamaStub(["I think it is an infection of some kind.", '{"choice": "B"}']) as stub:
        r = asyncio.run(tasks.answer_mcq(engine_for(stub.url), "medgpt", MCQ["question"], MCQ["options"]))
    assert (r.choice, r.rescued) == ("B", True)
    assert stub.requests[1]["format"]["properties"]["choice"]["enum"] == ["A", "B", "C", "D"]


def test_unknown_model_and_model_list():
    with OllamaStub([]) as stub:
        engine = engine_for(stub.url)
        with pytest.raises(ModelNotFound):
            asyncio.run(complete(engine, GenerationRequest("other", [{"role": "user", "content": "x"}])))
        models = asyncio.run(engine.models())
    assert [(m.name, m.quantization, m.size_bytes) for m in models] == [("medgpt", "Q4_K_M", 253_000_000)]


def test_closed_port_is_unavailable():
    engine = engine_for(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(EngineUnavailable):
        asyncio.run(complete(engine, GenerationRequest("medgpt", [{"role": "user", "content": "x"}])))


def test_gateway_answers_503_with_retry_after_when_ollama_is_down():
    url = f"http://127.0.0.1:{free_port()}"
    settings = Settings(engine="ollama", default_model="medgpt", models=SPECS, ollama=OllamaSettings(host=url))
    with TestClient(create_app(settings)) as client:
        for path, body in [("/ask", {"question": "q"}), ("/ask", {**MCQ, "stream": True}),
                           ("/summarize", {"text": "Pt well."})]:
            r = client.post(path, json=body)
            assert r.status_code == 503 and r.headers["retry-after"], (path, r.text)
        assert client.get("/ready").status_code == 503
        assert client.get("/models").status_code == 503
        assert client.get("/health").status_code == 200  # alive, just not ready


def test_gateway_serves_through_ollama():
    reply = "<analysis>Casts localise to the kidney.</analysis>\n<answer>B: Acute pyelonephritis</answer>"
    with OllamaStub([reply]) as stub:
        settings = Settings(engine="ollama", default_model="medgpt", models=SPECS,
                            ollama=OllamaSettings(host=stub.url))
        with TestClient(create_app(settings)) as client:
            r = client.post("/ask", json=MCQ)
            assert r.status_code == 200, r.text
            assert r.json()["choice"] == "B"
            assert client.get("/models").json()["models"][0]["name"] == "medgpt"


# --- prompts that do not fit: counted first, refused before anything is sent (Ollama would cut them silently) ---

HI = [{"role": "user", "content": "Name one symptom of influenza."}]


def test_without_the_gguf_a_prompt_is_bounded_by_its_bytes_and_refused_when_over():
    spec = ModelSpec(name="medgpt", n_ctx=512)
    fits = [{"role": "user", "content": "fever " * 10}]
    with OllamaStub(["Influenza."], truncate=True) as stub:
        engine = OllamaEngine([spec], OllamaSettings(host=stub.url), timeout=10)
        with pytest.raises(PromptTooLong):
            asyncio.run(complete(engine, GenerationRequest("medgpt", [{"role": "user", "content": "fever " * 100}])))
        out = asyncio.run(complete(engine, GenerationRequest("medgpt", fits, max_tokens=1000)))
    assert [r["path"] for r in stub.requests] == ["/api/chat"]  # the long one never reached the server
    bound = len(templates.render(fits).encode()) + 1
    options = stub.requests[0]["options"]
    # num_predict is cut to the room left, so Ollama never shifts the prompt out of the context either
    assert options["num_ctx"] == 512 and options["num_predict"] == 512 - bound
    assert out.prompt_tokens < 512  # the stub (which truncates like Ollama) did not have to


def test_with_the_gguf_here_the_count_is_exact(gguf_path):
    messages = prompts.note_qa_messages("BP 120/80, HR 72, afebrile. Café 😀 <start_of_turn>", "Vitals?")
    rendered = templates.render(messages)
    exact = len(tokenize_prompt(load_vocab(gguf_path), rendered, templates.named("gemma")))
    assert exact < len(rendered.encode()) + 1  # the byte bound over-counts
    with OllamaStub(["Normal.", "Normal."]) as stub:
        roomy = OllamaEngine([ModelSpec(name="medgpt", path=gguf_path, n_ctx=exact + 3)],
                             OllamaSettings(host=stub.url), timeout=10)  # fmt: skip
        assert asyncio.run(roomy.count_tokens("medgpt", rendered)) == exact
        asyncio.run(complete(roomy, GenerationRequest("medgpt", messages, max_tokens=50)))
        full = OllamaEngine([ModelSpec(name="medgpt", path=gguf_path, n_ctx=exact)],
                            OllamaSettings(host=stub.url), timeout=10)  # fmt: skip
        with pytest.raises(PromptTooLong):
            asyncio.run(complete(full, GenerationRequest("medgpt", messages, max_tokens=50)))
    assert len(stub.requests) == 1 and stub.requests[0]["options"]["num_predict"] == 3


def test_gateway_answers_413_for_a_prompt_ollama_would_truncate():
    specs = [ModelSpec(name="medgpt", n_ctx=1024)]
    with OllamaStub(["never"], truncate=True) as stub:
        settings = Settings(engine="ollama", default_model="medgpt", models=specs,
                            ollama=OllamaSettings(host=stub.url))  # fmt: skip
        with TestClient(create_app(settings)) as client:
            r = client.post("/ask", json={"question": "Is this fever? " * 100, "max_tokens": 16})
    assert r.status_code == 413, r.text
    assert not [q for q in stub.requests if q["path"] == "/api/chat" and q["options"]["num_predict"] != 1]


# --- the deadline bounds the whole generation, stream reads included ------------------------------------------


@pytest.mark.parametrize("stall", [{"delay_headers": 5}, {"delay_between": 5}], ids=["before-headers", "mid-stream"])
def test_a_stalled_server_times_out_at_the_request_deadline(stall):
    with OllamaStub(["one two three"], **stall) as stub:
        engine = engine_for(stub.url)  # the client's own timeout is 10 s: the request's 0.5 s must win
        started = time.monotonic()
        with pytest.raises(GenerationTimeout):
            asyncio.run(complete(engine, GenerationRequest("medgpt", HI, max_tokens=8, timeout=0.5)))
        assert time.monotonic() - started < 3
        stub.delay_headers = stub.delay_between = 0  # the next request is served
        stub.replies = ["Fever."]
        assert asyncio.run(complete(engine, GenerationRequest("medgpt", HI, max_tokens=8, timeout=5))).text == "Fever."


def test_gateway_answers_504_when_ollama_stalls():
    with OllamaStub(["Fever has many causes."], delay_between=5) as stub:
        settings = Settings(engine="ollama", default_model="medgpt", models=SPECS,
                            ollama=OllamaSettings(host=stub.url), limits=Limits(generation_timeout=0.5))  # fmt: skip
        with TestClient(create_app(settings)) as client:
            started = time.monotonic()
            r = client.post("/ask", json={"question": "What causes fever?", "max_tokens": 16})
            elapsed = time.monotonic() - started
    assert r.status_code == 504, r.text
    assert elapsed < 4
