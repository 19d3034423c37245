"""POST /summarize through the real app: styles, chunking of a long transcription, streaming."""

import json

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from medgpt.settings import Settings
from tests.conftest import TEST_CTX


def test_brief_summary(client, transcriptions):
    note = transcriptions[2]["transcription"]
    r = client.post("/summarize", json={"text": note, "style": "brief", "max_tokens": 48, "model": "medgpt"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["summary"].strip() and body["chunks"] == 1 and body["style"] == "brief"
    assert body["usage"]["prompt_tokens"] > 300


@pytest.fixture(scope="module")
def shipped(settings):
    """An app serving the shipped ``medgpt`` model (base + adapter) at the tests' context size: the base model
    copies a part's summary instruction back, which the echo guard refuses (a 502), so chunking is shown here."""
    medgpt = Settings().model("medgpt").model_copy(update={"n_ctx": TEST_CTX})
    served = settings.model_copy(update={"models": [medgpt], "default_model": "medgpt"})
    with TestClient(create_app(served)) as c:
        yield c


def test_long_transcription_is_chunked(shipped, transcriptions):
    note = transcriptions[0]["transcription"]
    r = shipped.post("/summarize", json={"text": note, "style": "bullets", "max_tokens": 32})
    assert r.status_code == 200, r.text
    assert r.json()["chunks"] > 1 and r.json()["summary"].strip()


def test_streamed_summary_ends_with_result(client):
    with client.stream("POST", "/summarize", json={"text": "Pt with cough x3 days, afebrile. Plan: fluids.",
                                                    "style": "soap", "max_tokens": 24, "stream": True,
                                                    "model": "medgpt"}) as r:
        lines = [ln for ln in r.read().decode().splitlines() if ln.startswith("data:")]
    final = json.loads(lines[-1][5:])
    assert final["style"] == "soap" and "summary" in final
    assert len(lines) >= 2
