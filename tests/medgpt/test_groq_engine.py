"""The ``groq`` engine kind serving the gateway: the official ``groq`` client against llama-cpp-python's real
OpenAI-compatible server on loopback (the session's ``openai_server``, under ``/openai`` where the Groq client
posts), standing in for Groq's cloud. The engine's own behaviour is in test_engine_contract.py."""

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from medgpt.settings import GroqSettings, Limits, ModelSpec, Settings
from tests.conftest import MCQ

pytest.importorskip("groq")
pytestmark = pytest.mark.slow


def test_gateway_serves_from_groq(openai_server):
    settings = Settings(
        engine="groq",
        default_model="groq-gemma",
        models=[ModelSpec(name="groq-gemma", remote="gemma-remote", n_ctx=2048)],
        groq=GroqSettings(base_url=openai_server, api_key="test", json_mode="json_object"),
        limits=Limits(generation_timeout=600),
    )
    with TestClient(create_app(settings)) as client:
        r = client.post("/ask", json={**MCQ, "max_tokens": 8})
        assert r.status_code == 200, r.text
        # No grammar on a remote engine: an off-format answer is rescued under the JSON schema, never guessed.
        assert r.json()["choice"] in MCQ["options"]
        assert client.post("/ask", json={"question": "q", "model": "gpt-17"}).status_code == 404
        assert [m["name"] for m in client.get("/models").json()["models"]] == ["groq-gemma"]
