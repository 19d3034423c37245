"""Loop and echo guards through the real app: the response's ``finish_reason``, the SSE result event, and the
counts in ``/metrics``. Loops and echoes come from the Ollama client against its loopback stub (no Ollama server
installs here), whose scripted replies make them certain; the real base GGUF's loop is stopped in
tests/medgpt/test_guards.py, and finish reasons of real answers are counted below."""

import json

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from medgpt import prompts
from medgpt.guards import degenerate
from medgpt.settings import ModelSpec, OllamaSettings, Settings
from tests.api.test_ask import _events
from tests.medgpt.ollama_stub import OllamaStub

LOOPING_QUESTION = "What is anemia?"


def metric(client: TestClient, name: str, **labels: str) -> float:
    """A sample's value from /metrics (0 when absent)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_a_looping_stream_ends_with_the_trimmed_answer_and_is_counted():
    """A looping open answer streamed through the app (scripted by the labelled Ollama stub: the base GGUF's own
    loops now open with its instruction restated, an echo the gateway refuses; tests/medgpt/test_guards.py stops a
    real base-model loop at the task level)."""
    loop = "Anemia is a low red cell mass. " + "It causes fatigue and pallor in most patients. " * 20
    with OllamaStub([loop]) as stub, ollama_app(stub) as client:
        with client.stream("POST", "/ask", json={"question": LOOPING_QUESTION, "stream": True}) as r:
            assert r.status_code == 200
            got = _events(r.read().decode())
        tokens = [e for e in got if e[0] == "token"]
        kind, result = got[-1]
        assert kind == "result" and result["finish_reason"] == "repetition"
        assert result["answer"] == "Anemia is a low red cell mass. It causes fatigue and pallor in most patients."
        assert degenerate(result["answer"]) is None
        # What was streamed before the guard fired stays sent; the result is the trimmed text.
        assert len("".join(t["text"] for _, t in tokens)) >= len(result["answer"])
        assert metric(client, "medgpt_guard_total", kind="repetition", mode="open") == 1
        assert metric(client, "medgpt_finish_total", reason="repetition", mode="open") == 1


def test_every_answer_is_counted_by_finish_reason(client):
    before = metric(client, "medgpt_finish_total", reason="length", mode="open")
    r = client.post("/ask", json={"question": "Define sepsis.", "max_tokens": 8})
    assert r.status_code == 200 and r.json()["finish_reason"] == "length"
    assert metric(client, "medgpt_finish_total", reason="length", mode="open") == before + 1


NOTE = (
    "Patient is a 64-year-old man admitted with community-acquired pneumonia. He was treated with ceftriaxone and "
    "azithromycin, improved over three days and was discharged home on oral amoxicillin for five more days."
)
QUESTION = "Which antibiotics were given?"


def ollama_app(stub: OllamaStub) -> TestClient:
    settings = Settings(
        engine="ollama",
        default_model="medgpt",
        models=[ModelSpec(name="medgpt", n_ctx=4096)],
        ollama=OllamaSettings(host=stub.url),
    )
    return TestClient(create_app(settings))


def test_an_echo_is_a_502_never_the_echo_and_is_counted():
    echo = prompts.note_qa_messages(NOTE, QUESTION)[0]["content"]  # the whole prompt, copied back
    with OllamaStub([echo, echo, echo, echo]) as stub, ollama_app(stub) as client:
        r = client.post("/ask", json={"question": QUESTION, "context": NOTE})
        assert r.status_code == 502
        assert "echoed the prompt instead of answering" in r.json()["detail"] and NOTE not in r.text
        with client.stream("POST", "/ask", json={"question": QUESTION, "context": NOTE, "stream": True}) as s:
            kind, error = _events(s.read().decode())[-1]
        assert kind == "error" and error["status"] == 502
        assert metric(client, "medgpt_finish_total", reason="echo", mode="note_qa") == 2
        assert metric(client, "medgpt_guard_total", kind="echo", mode="note_qa") == 4  # answer + retry, twice
        assert "pneumonia" not in client.get("/metrics").text  # counts only, never text


def test_an_echo_retried_into_an_answer_is_served_and_counted():
    echo = prompts.note_qa_messages(NOTE, QUESTION)[0]["content"]
    with (
        OllamaStub([echo, "Ceftriaxone and azithromycin, then oral amoxicillin."]) as stub,
        ollama_app(stub) as client,
    ):
        r = client.post("/ask", json={"question": QUESTION, "context": NOTE})
        assert r.status_code == 200, r.text
        assert r.json()["answer"] == "Ceftriaxone and azithromycin, then oral amoxicillin."
        assert r.json()["finish_reason"] == "stop"
        assert metric(client, "medgpt_guard_total", kind="echo", mode="note_qa") == 1
        assert metric(client, "medgpt_finish_total", reason="stop", mode="note_qa") == 1


def test_a_looping_summary_is_trimmed_and_counted():
    loop = "Cough for three days, no fever. " + "Plan: fluids and rest at home. " * 20
    with OllamaStub([loop]) as stub, ollama_app(stub) as client:
        r = client.post("/summarize", json={"text": "Pt with cough x3 days, afebrile. Plan: fluids."})
        assert r.status_code == 200, r.text
        assert r.json()["finish_reason"] == "repetition"
        assert r.json()["summary"] == "Cough for three days, no fever. Plan: fluids and rest at home."
        assert metric(client, "medgpt_guard_total", kind="repetition", mode="summarize") == 1
