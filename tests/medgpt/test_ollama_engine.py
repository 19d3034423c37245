"""The Ollama engine (official client) against a loopback stub of Ollama's API, and against a closed port.

The stub (tests/medgpt/ollama_stub.py) stands in for an Ollama server, which cannot be installed here.
"""

import asyncio

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from medgpt import tasks
from medgpt.engines import EngineUnavailable, GenerationRequest, ModelNotFound, complete
from medgpt.engines.ollama import OllamaEngine
from medgpt.settings import ModelSpec, OllamaSettings, Settings
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
