"""The gateway with the llama-server engine (``engine: llamaserver``): the same routes, answers and error codes as
with the in-process engine, through the real ``llama-server`` and GGUF."""

import pytest
from fastapi.testclient import TestClient

from tests.api.test_ask import _events
from tests.conftest import MCQ


@pytest.fixture(scope="module")
def server_client(settings, server_engine):
    from api.main import create_app

    # Not closed here: the session-scoped engine (and its server) is closed by its own fixture.
    with TestClient(create_app(settings, server_engine)) as c:
        yield c


def test_mcq_answer_with_a_valid_choice(server_client):
    r = server_client.post("/ask", json={**MCQ, "max_tokens": 64, "model": "medgpt"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choice"] in MCQ["options"] and body["usage"]["completion_tokens"] > 0


def test_a_stream_is_token_events_then_one_result(server_client):
    r = server_client.post("/ask", json={"question": "What is hypertension?", "max_tokens": 16, "model": "medgpt",
                                         "stream": True})  # fmt: skip
    assert r.status_code == 200
    events = _events(r.text)
    assert [e for e, _ in events[:-1]] == ["token"] * (len(events) - 1) and events[-1][0] == "result"
    assert "".join(d["text"] for _, d in events[:-1]).strip()


def test_a_summary(server_client):
    note = "Patient with 3 days of cough and fever. Chest X-ray: right lower lobe infiltrate. Started amoxicillin."
    r = server_client.post("/summarize", json={"text": note, "model": "medgpt", "max_tokens": 48})
    assert r.status_code == 200, r.text
    assert r.json()["summary"].strip()


def test_errors_keep_their_codes(server_client):
    too_long = {"question": "What is the diagnosis?", "context": "fever " * 3000, "max_tokens": 8}
    r = server_client.post("/ask", json=too_long)
    assert r.status_code == 413 and "tokens" in r.json()["detail"]
    assert server_client.post("/ask", json={"question": "q", "model": "no-such-model"}).status_code == 404
    assert server_client.get("/ready").status_code == 200
